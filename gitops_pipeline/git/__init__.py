"""Git: mirrors of remotes, export of a revision's tree. The only package that runs git."""
