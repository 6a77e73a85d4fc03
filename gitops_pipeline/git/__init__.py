"""Git: mirrors of remotes, reading a revision, signature verification, the sync tag and
commits pushed back as compare-and-swap. The only package that runs git."""
