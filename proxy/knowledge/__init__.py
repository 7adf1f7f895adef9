"""Knowledge bases: ingest documents into chunks, retrieve the best ones for a turn.

``extract`` -> ``chunking`` -> (``dense`` embeddings) -> database + in-memory indexes
(``lexical`` BM25, ``dense`` cosine), searched by ``retrieval.Retriever``.
``service.build_knowledge`` wires them for the app; nothing is built at import time.
"""
