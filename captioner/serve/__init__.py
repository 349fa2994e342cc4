"""`captioner serve`: a JSON HTTP API with dynamic batching (`api`, `batcher`) and a Gradio page (`page`).

Needs the serve extra: `pip install -e .[serve]` (Gradio, which brings FastAPI and uvicorn).
"""
