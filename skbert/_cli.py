"""The command line: ``skbert embed INPUT --column text -o OUTPUT``.

Reads a CSV or Parquet file, embeds one text column (or two, as sentence pairs)
with :class:`BertEmbedder`,
and writes the embeddings as Parquet (ids and one column per feature) or as a
``.npy`` array with the ids beside it. A disk cache next to the output makes a
re-run after an interruption resume where it stopped. A user's mistake gives a
one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._device import PRECISIONS

READERS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
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
    embed.add_argument("input", help="a .csv, .tsv or .parquet file")
    embed.add_argument("-o", "--output", required=True, help="a .parquet or .npy file to write")
    embed.add_argument("--column", default="text", help="the text column (default: text)")
    embed.add_argument("--pair-column", help="a second text column: embed (column, pair column) as sentence pairs, "
                       "[CLS] A [SEP] B [SEP]")
    embed.add_argument("--segments", default="joint", help="with --pair-column: joint, a, b, abs_diff, product, "
                       "or a comma list (default: joint)")
    embed.add_argument("--id-column", help="the column of row ids to keep (default: the row number)")
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
    embed.add_argument("--cache", help="disk cache folder (default: .skbert-cache beside the output)")
    embed.add_argument("--no-cache", action="store_true", help="do not cache (a re-run starts over)")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def read_table(path: Path):
    import pandas as pd

    if not path.is_file():
        raise UserError(f"input file {str(path)!r} does not exist")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"input file {str(path)!r}: expected one of {', '.join(READERS)}")
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", keep_default_na=True)
    except ImportError as error:
        raise UserError(f"reading Parquet needs pyarrow (pip install pyarrow): {error}") from None
    except Exception as error:  # a malformed file
        raise UserError(f"could not read {str(path)!r}: {error}") from None


def select_texts(frame, column: str, id_column: str | None, pair_column: str | None = None):
    """The texts (or, with a pair column, the (A, B) pairs) and the ids of a table."""
    for kind, name in (("column", column), ("pair column", pair_column), ("id column", id_column)):
        if name is not None and name not in frame.columns:
            raise UserError(f"{kind} {name!r} is not in the input; its columns are {list(frame.columns)}")
    ids = frame[id_column] if id_column else frame.index.to_series(name=frame.index.name or "row")
    for name in (column, pair_column) if pair_column else (column,):
        texts = frame[name]
        missing = texts.isna() | ~texts.map(lambda v: isinstance(v, str))
        if missing.any():
            rows = [str(i) for i in ids[missing].tolist()[:5]]
            more = f" and {int(missing.sum()) - 5} more" if missing.sum() > 5 else ""
            raise UserError(f"{int(missing.sum())} row(s) have no text in column {name!r}: ids {', '.join(rows)}{more}")
    if pair_column:
        return list(zip(frame[column].tolist(), frame[pair_column].tolist())), ids
    return frame[column].tolist(), ids


def write_output(path: Path, X, names, ids) -> list[Path]:
    import numpy as np
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, X)
        id_path = path.with_suffix(".ids.csv")
        pd.DataFrame({ids.name or "id": ids.to_numpy()}).to_csv(id_path, index=False)
        return [path, id_path]
    frame = pd.DataFrame(X, columns=list(names))
    frame.insert(0, ids.name or "id", ids.to_numpy())
    try:
        frame.to_parquet(path, index=False)
    except ImportError as error:
        raise UserError(f"writing Parquet needs pyarrow (pip install pyarrow): {error}") from None
    return [path]


def embed(args) -> int:
    from . import BertEmbedder

    output = Path(args.output)
    if output.suffix.lower() not in WRITERS:
        raise UserError(f"output {str(output)!r}: expected a .parquet or .npy file")
    frame = read_table(Path(args.input))
    texts, ids = select_texts(frame, args.column, args.id_column, args.pair_column)
    if not texts:
        raise UserError(f"input file {args.input!r} has no rows")
    cache = None if args.no_cache else Path(args.cache or output.parent / ".skbert-cache")
    embedder = BertEmbedder(
        args.model, pooling=_parse_pooling(args.pooling), layers=_parse_layers(args.layers),
        layer_aggregation=args.layer_aggregation, include_special_tokens=args.include_special_tokens,
        normalize=args.normalize, pairs=args.pair_column is not None, segments=_parse_pooling(args.segments),
        max_length=args.max_length, long_text=args.long_text, batch_size=args.batch_size,
        device=args.device, precision=args.precision, show_progress=not args.quiet, cache=cache,
    )
    try:
        X, report = embedder.fit(texts[:1]).transform_with_report(texts)
    except KeyboardInterrupt:
        hint = " re-run the same command to resume from the cache" if cache else ""
        print(f"skbert: interrupted;{hint}", file=sys.stderr)
        return 130
    written = write_output(output, X, embedder.get_feature_names_out(), ids)
    print(
        f"skbert: {len(texts)} texts -> {X.shape[1]} features; encoded {report.n_encoded}, "
        f"from cache {report.n_cache_hits}; wrote {', '.join(map(str, written))}",
        file=sys.stderr,
    )
    return 0


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return embed(args)
    except UserError as error:
        print(f"skbert: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as error:  # bad parameters or a model that cannot be found
        message = str(error).strip().replace("\n", "\n  ")
        print(f"skbert: error: {message}", file=sys.stderr)
        return 2

