"""``proxy knowledge``: knowledge bases straight on the database.

Uses ``PROXY_DATABASE_URL`` (and the ``PROXY_EMBEDDINGS_*`` settings: documents added
here are embedded when an endpoint is configured). Running proxies reload a changed
base when they next poll. Failures print one clear line and exit 1.
"""

from __future__ import annotations

import argparse
import mimetypes
from pathlib import Path

from proxy.cli_admin import (
    Command,
    CommandFailed,
    Sessions,
    _parser,
    _print_json,
    _print_table,
    _run,
    _validated,
)
from proxy.context.budget import TokenCounter
from proxy.errors import ProxyError
from proxy.knowledge.schemas import (
    MAX_DOCUMENT_BYTES,
    DocumentOut,
    KnowledgeBaseCreate,
    KnowledgeBaseOut,
    SearchHit,
)
from proxy.knowledge.service import build_knowledge
from proxy.settings import Settings

CONTENT_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}


def guess_content_type(path: Path) -> str:
    known = CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
    if known is None:
        raise CommandFailed(f"cannot tell the type of {path}: pass --content-type")
    return known


async def _create(settings: Settings, sessions: Sessions, args: argparse.Namespace) -> None:
    body: KnowledgeBaseCreate = _validated(
        KnowledgeBaseCreate,
        {
            "name": args.name,
            "description": args.description,
            "chunk_tokens": args.chunk_tokens,
            "chunk_overlap_tokens": args.overlap_tokens,
        },
    )
    _, service = build_knowledge(settings, sessions, TokenCounter())
    await service.create_base(
        body.name, body.description, body.chunk_tokens, body.chunk_overlap_tokens
    )
    print(f"knowledge base {body.name} created")


def _read(name: str, content_type: str | None) -> tuple[Path, bytes, str]:
    path = Path(name)
    if not path.is_file():
        raise CommandFailed(f"no file {path}")
    if path.stat().st_size > MAX_DOCUMENT_BYTES:
        raise CommandFailed(f"{path} exceeds {MAX_DOCUMENT_BYTES} bytes")
    return path, path.read_bytes(), content_type or guess_content_type(path)


async def _add(settings: Settings, sessions: Sessions, args: argparse.Namespace) -> None:
    files = [_read(name, args.content_type) for name in args.files]  # all readable first
    _, service = build_knowledge(settings, sessions, TokenCounter())
    for path, content, content_type in files:
        document = await service.add_document(
            args.name, source_id=path.name, content=content, content_type=content_type
        )
        print(f"{path.name}: {document.chunk_count} chunks (document {document.id})")


async def _list(settings: Settings, sessions: Sessions, args: argparse.Namespace) -> None:
    _, service = build_knowledge(settings, sessions, TokenCounter())
    if args.name is None:
        bases = [KnowledgeBaseOut.from_summary(s) for s in await service.list_bases()]
        if args.json:
            _print_json([base.model_dump(mode="json") for base in bases])
            return
        _print_table(
            ("NAME", "DOCUMENTS", "CHUNKS", "CHUNK TOKENS", "DESCRIPTION"),
            [(b.name, b.documents, b.chunks, b.chunk_tokens, b.description) for b in bases],
        )
        return
    rows, _ = await service.list_documents(args.name, limit=100_000)
    documents = [DocumentOut.from_row(row) for row in rows]
    if args.json:
        _print_json([document.model_dump(mode="json") for document in documents])
        return
    _print_table(
        ("ID", "SOURCE", "TYPE", "CHUNKS", "TITLE"),
        [(d.id, d.source_id, d.content_type, d.chunk_count, d.title) for d in documents],
    )


async def _search(settings: Settings, sessions: Sessions, args: argparse.Namespace) -> None:
    retriever, service = build_knowledge(settings, sessions, TokenCounter())
    await service.get_base(args.name)
    await retriever.reload(sessions, args.name)
    chunks = await retriever.retrieve([args.name], args.query, top_k=args.k)
    hits = [SearchHit.from_chunk(rank, chunk) for rank, chunk in enumerate(chunks, start=1)]
    if args.json:
        _print_json([hit.model_dump(mode="json") for hit in hits])
        return
    if not hits:
        print("no matching chunks")
    for hit in hits:
        text = " ".join(hit.text.split())
        print(f"{hit.rank}. {hit.score:.4f}  {hit.source_id}  {hit.title or ''}".rstrip())
        print(f"   {text[:300]}{'...' if len(text) > 300 else ''}")


async def _delete(settings: Settings, sessions: Sessions, args: argparse.Namespace) -> None:
    _, service = build_knowledge(settings, sessions, TokenCounter())
    if not await service.delete_base(args.name):
        raise CommandFailed(f"no knowledge base {args.name!r}")
    print(f"knowledge base {args.name} deleted")


def _failing_clearly(command: Command) -> Command:
    """Knowledge errors (unknown base, unreadable file, ...) print as one line."""

    async def run(settings: Settings, sessions: Sessions, args: argparse.Namespace) -> None:
        try:
            await command(settings, sessions, args)
        except ProxyError as exc:
            raise CommandFailed(exc.message) from exc

    return run


def knowledge_main(argv: list[str] | None = None) -> int:
    parser, actions = _parser("proxy knowledge", "Manage knowledge bases and their documents.")
    create = actions.add_parser("create", help="create a knowledge base")
    create.add_argument("name")
    create.add_argument("--description")
    create.add_argument("--chunk-tokens", type=int, default=200)
    create.add_argument("--overlap-tokens", type=int, default=40)
    add = actions.add_parser("add", help="add files (the file name is the source id)")
    add.add_argument("name")
    add.add_argument("files", nargs="+", metavar="FILE")
    add.add_argument("--content-type", help="default: from the file extension")
    listing = actions.add_parser("list", help="list bases, or the documents of one")
    listing.add_argument("name", nargs="?")
    listing.add_argument("--json", action="store_true")
    search = actions.add_parser("search", help="what retrieval returns for a query")
    search.add_argument("name")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5, help="results (default 5)")
    search.add_argument("--json", action="store_true")
    delete = actions.add_parser("delete", help="delete a knowledge base and its documents")
    delete.add_argument("name")
    args = parser.parse_args(argv)
    commands = {
        "create": _create,
        "add": _add,
        "list": _list,
        "search": _search,
        "delete": _delete,
    }
    return _run("proxy knowledge", _failing_clearly(commands[args.action]), args)
