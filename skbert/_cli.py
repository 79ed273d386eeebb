"""The command line: ``skbert embed INPUT --column text -o OUTPUT``.

With ``-o DIRECTORY`` (no file suffix) the input (a CSV/Parquet file, a directory of
them, or a glob) is streamed in bounded chunks into a Parquet dataset of parts, which
a re-run resumes (:mod:`skbert._streaming`), in this process or on Dask workers
(``--workers N``, ``--scheduler ADDRESS``).

With ``-o FILE.parquet`` or ``FILE.npy`` it reads one CSV or Parquet file whole,
embeds one text column (or two, as sentence pairs) with :class:`BertEmbedder`,
and writes the embeddings as Parquet (ids and one column per feature) or as a
``.npy`` array with the ids beside it. A disk cache next to the output makes a
re-run after an interruption resume where it stopped. A user's mistake gives a
one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ._device import PRECISIONS
from ._streaming import LAYOUTS, embedding_table
from ._tables import ON_NULL, TableError, apply_null_policy, read_table

WRITERS = (".parquet", ".npy")


class UserError(Exception):
    """A mistake in the command's input, reported without a traceback."""


def _parse_layers(text: str):
    if "," in text:
        try:
            return tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise UserError(f"--layers {text!r}: a comma-separated list must hold integers") from None
    try:
        return int(text)
    except ValueError:
        return text


def _parse_pooling(text: str):
    parts = [part.strip() for part in text.split(",") if part.strip()]
    return parts[0] if len(parts) == 1 else tuple(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skbert", description="Contextual BERT embeddings from the command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    embed = commands.add_parser("embed", help="embed a text column of a CSV or Parquet file")
    embed.add_argument("input", help="a .csv, .tsv or .parquet file; for a dataset output also a directory of "
                       "them or a glob (quote it)")
    embed.add_argument("-o", "--output", required=True, help="a directory (no suffix): a Parquet dataset streamed "
                       "part by part, resumable; or a .parquet or .npy file, written at once")
    embed.add_argument("--column", default="text", help="the text column (default: text)")
    embed.add_argument("--pair-column", help="a second text column: embed (column, pair column) as sentence pairs, "
                       "as the model's tokenizer lays a pair out")
    embed.add_argument("--segments", default="joint", help="with --pair-column: joint, a, b, abs_diff, product, "
                       "or a comma list (default: joint)")
    embed.add_argument("--chunk-rows", type=int, default=10_000,
                       help="dataset output: rows read, embedded and written per part (default: 10000)")
    embed.add_argument("--layout", choices=LAYOUTS,
                       help="the embedding as one fixed-size list column 'embedding' (default for a dataset), "
                       "one column per feature (default for a .parquet file), or both")
    embed.add_argument("--on-null", choices=ON_NULL, default="error",
                       help="a row without text (an empty CSV field, a Parquet null, NaN; \"NA\" is a text): "
                       "stop naming it (default), embed it as empty, or skip it (counted)")
    embed.add_argument("--workers", type=int, help="dataset output: run on a local Dask cluster of N worker processes")
    embed.add_argument("--scheduler", help="dataset output: run on the Dask cluster at this address (the output "
                       "directory must be reachable from its workers)")
    embed.add_argument("--id-column", action="append", help="a column of row ids to keep; repeat for several "
                       "(default: the row number, and for a dataset the file too)")
    embed.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2",
                       help="model folder or id (default: sentence-transformers/all-MiniLM-L6-v2)")
    embed.add_argument("--pooling", default="mean", help="cls, mean, max, mean_max, last, pooler, or a comma list")
    embed.add_argument("--layers", default="-1", help="an int, a comma list of ints, or last, second_to_last, "
                       "last_four, all")
    embed.add_argument("--layer-aggregation", default="concat", choices=["concat", "mean", "sum"])
    embed.add_argument("--include-special-tokens", action="store_true")
    embed.add_argument("--normalize", action="store_true", help="L2-normalise each row")
    embed.add_argument("--max-length", type=int)
    embed.add_argument("--long-text", default="truncate", choices=["truncate", "head_tail", "chunk"])
    embed.add_argument("--batch-size", type=int, help="most texts per forward pass (default: as the token budget allows)")
    embed.add_argument("--device", default="auto")
    embed.add_argument("--precision", default="auto", choices=PRECISIONS,
                       help="auto: bfloat16 where the hardware multiplies it natively, else float32 (default: auto)")
    embed.add_argument("--cache", help="disk cache folder (file output: default .skbert-cache beside it; a dataset "
                       "resumes from its parts and caches only with --cache)")
    embed.add_argument("--no-cache", action="store_true", help="do not cache (a re-run starts over)")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def select_texts(frame, column: str, id_columns: list | None, pair_column: str | None, on_null: str, where: str):
    """The texts (or, with a pair column, the (A, B) pairs), the id columns, and how many rows had no text,
    under the null policy every output shares (:func:`~skbert._tables.apply_null_policy`)."""
    named = [("column", column), ("pair column", pair_column)] + [("id column", c) for c in id_columns or []]
    for kind, name in named:
        if name is not None and name not in frame.columns:
            raise UserError(f"{kind} {name!r} is not in the input; its columns are {list(frame.columns)}")
    if not id_columns:
        index_name = frame.index.name or "row"
        frame = frame.rename_axis(index_name).reset_index()
        id_columns = [index_name]
    columns = [column, pair_column] if pair_column else [column]
    frame, n_null = apply_null_policy(frame, columns, id_columns, on_null, where)
    sides = [frame[name].tolist() for name in columns]
    return (list(zip(*sides)) if pair_column else sides[0]), frame[id_columns], n_null


def write_output(path: Path, X, names, ids, layout: str) -> list[Path]:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, X)
        id_path = path.with_suffix(".ids.csv")
        ids.to_csv(id_path, index=False)
        return [path, id_path]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise UserError(f"writing Parquet needs pyarrow (pip install pyarrow): {error}") from None
    ids_table = pa.Table.from_pandas(ids.reset_index(drop=True), preserve_index=False)
    pq.write_table(embedding_table(ids_table, X, [str(n) for n in names], layout), path)
    return [path]


def _embedder(args, cache, cache_memory_bytes=2 * 1024**3):
    from . import BertEmbedder

    return BertEmbedder(
        args.model, pooling=_parse_pooling(args.pooling), layers=_parse_layers(args.layers),
        layer_aggregation=args.layer_aggregation, include_special_tokens=args.include_special_tokens,
        normalize=args.normalize, pairs=args.pair_column is not None, segments=_parse_pooling(args.segments),
        max_length=args.max_length, long_text=args.long_text, batch_size=args.batch_size,
        device=args.device, precision=args.precision, show_progress=False, cache=cache,
        cache_memory_bytes=cache_memory_bytes,
    )


def settings_digest(embedder, options) -> str:
    """What a dataset part is made with: everything that changes its numbers or columns.

    The encoder's side is :func:`~skbert._options.numbers_fingerprint`, the digest the
    cache keys use (the weights themselves, the device type and precision as resolved
    on this machine, the window...), so new weights in the same folder, or "auto"
    resolving to another precision, redo every part; then what pooling makes of it.
    """
    import hashlib
    import json

    from ._options import numbers_fingerprint

    loaded = embedder._load()
    pooled = {name: getattr(embedder, name) for name in (
        "pooling_modes_", "layer_indices_", "segments_", "layer_aggregation", "include_special_tokens", "normalize",
        "pairs")}
    described = json.dumps([numbers_fingerprint(loaded, embedder._options(loaded)).hex(), pooled,
                            options.text_columns, options.id_columns, options.layout], default=str, sort_keys=True)
    return hashlib.blake2b(described.encode(), digest_size=16).hexdigest()


def embed_file(args, output: Path) -> int:
    """``-o FILE.parquet`` or ``FILE.npy``: one table, read and written whole."""
    if not Path(args.input).is_file():
        if Path(args.input).is_dir() or any(ch in args.input for ch in "*?["):
            raise UserError(f"input {args.input!r} names several files: write a dataset (-o a directory)")
        raise UserError(f"input file {args.input!r} does not exist")
    if args.workers or args.scheduler:
        raise UserError("--workers and --scheduler write a dataset: give -o a directory")
    frame = read_table(Path(args.input))
    texts, ids, n_null = select_texts(frame, args.column, args.id_column, args.pair_column, args.on_null,
                                      repr(args.input))
    if not texts:
        raise UserError(f"input file {args.input!r} has no rows" + (" with text" if n_null else ""))
    cache = None if args.no_cache else Path(args.cache or output.parent / ".skbert-cache")
    embedder = _embedder(args, cache).set_params(show_progress=not args.quiet)
    try:
        X, report = embedder.fit(texts[:1]).transform_with_report(texts)
    except KeyboardInterrupt:
        hint = " re-run the same command to resume from the cache" if cache else ""
        print(f"skbert: interrupted;{hint}", file=sys.stderr)
        return 130
    written = write_output(output, X, embedder.get_feature_names_out(), ids, args.layout or "columns")
    nulls = f"; {n_null} row(s) without text {'skipped' if args.on_null == 'skip' else 'embedded as empty'}"
    print(
        f"skbert: {len(texts)} texts -> {X.shape[1]} features; encoded {report.n_encoded}, "
        f"from cache {report.n_cache_hits}{nulls if n_null else ''}; wrote {', '.join(map(str, written))}",
        file=sys.stderr,
    )
    return 0


def _client(args):
    """A Dask client for --workers or --scheduler, or None."""
    if not (args.workers or args.scheduler):
        return None
    try:
        from distributed import Client, LocalCluster
    except ImportError as error:
        raise UserError(f"--workers and --scheduler need Dask (pip install skbert[dask]): {error}") from None
    if args.scheduler:
        return Client(args.scheduler)
    import dask

    from .dask import worker_environ

    with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ()}):  # torch-friendly malloc
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=40)
    return Client(cluster)


def embed_dataset(args, output: Path) -> int:
    """``-o DIRECTORY``: stream the input, chunk by chunk, into a resumable Parquet dataset."""
    from tqdm.auto import tqdm

    from ._streaming import Options, stream_embed

    if args.chunk_rows < 1:
        raise UserError(f"--chunk-rows {args.chunk_rows}: at least 1")
    text_columns = [args.column] + ([args.pair_column] if args.pair_column else [])
    # Dask starts workers with OMP_NUM_THREADS=1: local workers get their share of the cores for torch
    threads = max(1, (os.cpu_count() or 1) // args.workers) if args.workers else None
    options = Options(text_columns, args.id_column or ["file", "row"], args.layout or "list", threads)
    cache = Path(args.cache) if args.cache and not args.no_cache else None  # the parts are what resumes
    embedder = _embedder(args, cache, cache_memory_bytes=256 * 2**20)
    embedder.fit([("a", "b")] if args.pair_column else ["a"])
    client = _client(args)
    try:
        with tqdm(unit="row", desc="skbert", disable=args.quiet, delay=1.0) as bar:
            summary = stream_embed(embedder, args.input, output, options, chunk_rows=args.chunk_rows,
                                   on_null=args.on_null, settings=settings_digest(embedder, options), client=client,
                                   progress=bar.update)
    except TableError as error:
        raise UserError(str(error)) from None
    except KeyboardInterrupt:
        print("skbert: interrupted; re-run the same command to resume (finished parts are kept)", file=sys.stderr)
        return 130
    finally:
        if client is not None:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
    nulls = f"; {summary.null_rows} row(s) without text {'skipped' if args.on_null == 'skip' else 'embedded as empty'}"
    print(
        f"skbert: {summary.rows} rows in {summary.parts} parts ({summary.parts_skipped} already complete) -> "
        f"{len(embedder.get_feature_names_out())} features; encoded {summary.encoded}, from cache "
        f"{summary.cache_hits}{nulls if summary.null_rows else ''}"
        f"{f'; {summary.truncated} truncated to --max-length' if summary.truncated else ''}"
        f"{f'; removed {summary.removed} stale part(s)' if summary.removed else ''}; wrote {output}",
        file=sys.stderr,
    )
    return 0


def embed(args) -> int:
    output = Path(args.output)
    suffix = output.suffix.lower()
    if suffix in WRITERS:
        return embed_file(args, output)
    if suffix and not output.is_dir():
        raise UserError(f"output {str(output)!r}: expected a .parquet or .npy file, or a directory (no suffix) "
                        "for a Parquet dataset")
    return embed_dataset(args, output)


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return embed(args)
    except (UserError, TableError) as error:
        print(f"skbert: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as error:  # bad parameters or a model that cannot be found
        message = str(error).strip().replace("\n", "\n  ")
        print(f"skbert: error: {message}", file=sys.stderr)
        return 2

