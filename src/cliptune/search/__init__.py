"""Using a trained model: an on-disk FAISS index over an image collection, text/image search over it, result
pictures and pages, and an HTTP server. Heavy modules (torch, faiss, fastapi) are imported by the submodules only."""
