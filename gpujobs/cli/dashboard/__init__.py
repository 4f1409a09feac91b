"""`gpujobs ui`: a small local web dashboard (stdlib HTTP server, server-rendered pages, one
inline script), on 127.0.0.1 only, behind a random token."""
