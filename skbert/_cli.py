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

Both read the text and id columns through :mod:`skbert._columns`, as :mod:`skbert.dask`
does, and say how many rows were truncated from the calls' reports. The embedder's
options are :class:`BertEmbedder`'s parameters, each taking what the estimator's
constraints accept and defaulting to its default (:data:`ESTIMATOR_OPTIONS`); the
command uses the estimator as a user does, through its public methods.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from numbers import Integral
from pathlib import Path

from sklearn.utils._param_validation import Interval, StrOptions

from ._columns import MADE_IDS, ON_NULL, ColumnError, TextColumns
from ._embedder import BertEmbedder
from ._pooling import SEGMENT_CHOICES
from ._report import caller_reports_truncation
from ._streaming import LAYOUTS, check_output_columns, embedding_table, id_table
from ._tables import TableError, column_types, read_table

WRITERS = (".parquet", ".npy")
#: Rows per part of a dataset output, unless --chunk-rows says otherwise.
CHUNK_ROWS = 10_000
#: The options whose value may be a comma list of negative integers (``--layers -2,-1``), which argparse
#: would otherwise take for an option.
_LIST_OPTIONS = ("--layers", "--pooling", "--segments")
_NEGATIVE_LIST = re.compile(r"-\d+(\s*,\s*-?\d+)+")

#: The estimator's parameters the command takes, each with a line of help. What an option accepts
#: and its default are the estimator's own, read off ``BertEmbedder._parameter_constraints`` and
#: ``BertEmbedder()``: a boolean is a flag, a set of strings a choice, an integer range an int, and a
#: parameter that also takes a tuple (pooling, layers, segments) a comma list. ``{choices}`` in a
#: line is filled with the strings the parameter accepts.
ESTIMATOR_OPTIONS = {
    "model_name": "a model folder, a model id served by an offline package, or a hub id (default: %(default)s)",
    "pooling": "{choices}, or a comma list of them (default: %(default)s)",
    "layers": "an int (0: the embedding layer, -1: the last), a comma list of ints, or {choices} "
              "(default: %(default)s)",
    "layer_aggregation": "how the vectors of several layers combine (default: %(default)s)",
    "include_special_tokens": "mean and max pooling count the special tokens",
    "normalize": "L2-normalise each row",
    "segments": "with --pair-column: {choices}, or a comma list of them (default: %(default)s)",
    "max_length": "most tokens per window, special tokens included (default: what the model holds)",
    "long_text": "a longer text: keep its first tokens (counted in the summary), its head and tail, or all of "
                 "it in overlapping windows (default: %(default)s)",
    "stride": "tokens consecutive windows share under --long-text chunk (default: a quarter of a window)",
    "batch_size": "most texts per forward pass (default: as the token budget allows)",
    "token_budget": "most padded tokens per forward pass (default: 2048 on a CPU, 65536 on a GPU)",
    "attention": "packed: batches without padding; padded; auto: packed where the kernel for it runs "
                 "(default: %(default)s)",
    "device": "auto (CUDA, else MPS, else the CPU), cpu, cuda, cuda:N or mps (default: %(default)s)",
    "precision": "auto: bfloat16 where the hardware multiplies it natively, float16 on older GPUs and MPS, else float32 (default: %(default)s)",
    "revision": "the hub revision of --model: a branch, tag or commit (default: the newest)",
}
#: Options not named after their parameter, and the command's own defaults.
FLAGS = {"model_name": "--model"}
COMMAND_DEFAULTS = {"model_name": "sentence-transformers/all-MiniLM-L6-v2"}
#: The choices of a parameter whose constraint is a plain string (checked at ``fit``).
OTHER_CHOICES = {"segments": SEGMENT_CHOICES}
#: The estimator's parameters the command sets itself, and from what.
SET_BY_THE_COMMAND = {
    "pairs": "--pair-column",
    "show_progress": "--quiet",
    "cache": "--cache and --no-cache",
    "cache_memory_bytes": "the output: 2 GiB for a file, 256 MiB per process for a dataset",
    "cache_disk_bytes": "the estimator's default: half the free disk space",
}


class UserError(Exception):
    """A mistake in the command's input, reported without a traceback."""


def accepted_strings(name: str) -> tuple[str, ...]:
    """The strings the estimator accepts for a parameter, sorted (empty where any string goes)."""
    for constraint in BertEmbedder._parameter_constraints[name]:
        if isinstance(constraint, StrOptions):
            return tuple(sorted(constraint.options))
    return tuple(OTHER_CHOICES.get(name, ()))


def _option_kind(name: str) -> str:
    """How the command takes a parameter, from its constraints: "flag", "choice", "int" or "text"."""
    constraints = BertEmbedder._parameter_constraints[name]
    if constraints == ["boolean"]:
        return "flag"
    if len(constraints) == 1 and isinstance(constraints[0], StrOptions):
        return "choice"
    if all(c is None or (isinstance(c, Interval) and c.type is Integral) for c in constraints):
        return "int"
    return "text"


def _add_estimator_option(group, name: str, default) -> None:
    flag = FLAGS.get(name, "--" + name.replace("_", "-"))
    help_text = ESTIMATOR_OPTIONS[name].format(choices=", ".join(accepted_strings(name)))
    kind = _option_kind(name)
    if kind == "flag":
        action = "store_true" if default is False else argparse.BooleanOptionalAction
        group.add_argument(flag, dest=name, action=action, default=default, help=help_text)
    elif kind == "choice":
        group.add_argument(flag, dest=name, choices=accepted_strings(name), default=default, help=help_text)
    else:
        group.add_argument(flag, dest=name, type=int if kind == "int" else str, default=default, help=help_text)


def read_value(name: str, value):
    """A parameter's value as the estimator takes it: a comma list becomes a tuple (of ints where the
    parameter takes integers), an integer's digits an int; anything else as written."""
    constraints = BertEmbedder._parameter_constraints[name]
    if not isinstance(value, str) or _option_kind(name) != "text" or tuple not in constraints:
        return value
    integral = Integral in constraints
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if len(parts) == 1 or not parts:
        part = parts[0] if parts else value
        try:
            return int(part) if integral else part
        except ValueError:
            return part
    if integral:
        try:
            return tuple(int(part) for part in parts)
        except ValueError:
            flag = FLAGS.get(name, "--" + name.replace("_", "-"))
            raise UserError(f"{flag} {value!r}: a comma-separated list must hold integers") from None
    return tuple(parts)


def estimator_params(args) -> dict:
    """The estimator's parameters the command's options set (``pairs`` from ``--pair-column``)."""
    params = {name: read_value(name, getattr(args, name)) for name in ESTIMATOR_OPTIONS}
    params["pairs"] = args.pair_column is not None
    return params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skbert", description="Contextual BERT embeddings from the command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    embed = commands.add_parser("embed", help="embed a text column of a CSV or Parquet file")
    embed.add_argument("input", help="a .csv, .tsv, .parquet or .pq file (CSV and TSV also compressed, "
                       ".csv.gz...); for a dataset output also a directory of them or a glob (quote it)")
    embed.add_argument("-o", "--output", required=True, help="a directory (no suffix): a Parquet dataset streamed "
                       "part by part, resumable; or a .parquet or .npy file, written at once")
    embed.add_argument("--column", default="text", help="the text column (default: text)")
    embed.add_argument("--pair-column", help="a second text column: embed (column, pair column) as sentence pairs, "
                       "as the model's tokenizer lays a pair out")
    embed.add_argument("--chunk-rows", type=int,
                       help=f"dataset output: rows read, embedded and written per part (default: {CHUNK_ROWS})")
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
    embed.add_argument("--cache", help="disk cache folder (file output: default .skbert-cache beside it; a dataset "
                       "resumes from its parts and caches only with --cache)")
    embed.add_argument("--no-cache", action="store_true", help="do not cache (a file output's re-run starts over; "
                       "a dataset still resumes from its parts)")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    estimator = embed.add_argument_group("the embedder", "BertEmbedder's parameters (its docstring says more)")
    defaults = {**BertEmbedder().get_params(), **COMMAND_DEFAULTS}
    for name in ESTIMATOR_OPTIONS:
        _add_estimator_option(estimator, name, defaults[name])
    return parser


def _text_columns(args) -> TextColumns:
    """The columns the options name: ``--column`` (and ``--pair-column``), and ``--id-column``."""
    return TextColumns.named([args.column, args.pair_column] if args.pair_column else args.column,
                             ids=args.id_column)


def _notes(n_null: int, on_null: str, n_truncated: int) -> str:
    """What a run's summary adds: rows without text, and rows truncated (from the reports' counts)."""
    notes = []
    if n_null:
        notes.append(f"{n_null} row(s) without text {'skipped' if on_null == 'skip' else 'embedded as empty'}")
    if n_truncated:
        notes.append(f"{n_truncated} truncated to --max-length")
    return "".join(f"; {note}" for note in notes)


def write_output(path: Path, X, names, ids, layout: str, id_types=None) -> list[Path]:
    """Write a file output: ``.npy`` (the array, with the ids in a CSV file beside it) or Parquet (the ids, each of
    its type in ``id_types`` where given, then the embedding)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        with open(path, "wb") as file:  # np.save(path) would add ".npy" to a name ending ".NPY"
            np.save(file, X)
        id_path = path.with_suffix(".ids.csv")
        ids.to_csv(id_path, index=False)
        return [path, id_path]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise UserError(f"writing Parquet needs pyarrow (pip install pyarrow): {error}") from None
    ids_table = id_table(ids.reset_index(drop=True), list(ids.columns), id_types or {})
    pq.write_table(embedding_table(ids_table, X, [str(n) for n in names], layout), path)
    return [path]


def _embedder(args, cache, cache_memory_bytes=2 * 1024**3):
    return BertEmbedder(**estimator_params(args), show_progress=False, cache=cache,
                        cache_memory_bytes=cache_memory_bytes)


def embed_file(args, output: Path) -> int:
    """``-o FILE.parquet`` or ``FILE.npy``: one table, read and written whole."""
    if not Path(args.input).is_file():
        if Path(args.input).is_dir() or any(ch in args.input for ch in "*?["):
            raise UserError(f"input {args.input!r} names several files: write a dataset (-o a directory)")
        raise UserError(f"input file {args.input!r} does not exist")
    if args.workers is not None or args.scheduler or args.chunk_rows is not None:
        raise UserError("--workers, --scheduler and --chunk-rows are for a dataset output: give -o a directory")
    npy = output.suffix.lower() == ".npy"
    if npy and args.layout is not None:
        raise UserError("--layout is for Parquet outputs: a .npy file holds the embedding array alone")
    columns = _text_columns(args)
    frame = read_table(Path(args.input), columns=columns.texts + columns.ids)
    columns.check_in(frame.columns, "in the input")
    frame, columns = columns.with_index_ids(frame)  # no --id-column: the table's index, or the row number
    layout = "array" if npy else args.layout or "columns"
    frame, n_null = columns.apply_null_policy(frame, args.on_null, repr(args.input))
    texts, ids = columns.texts_of(frame), frame[list(columns.ids)]
    if not texts:
        raise UserError(f"input file {args.input!r} has no rows" + (" with text" if n_null else ""))
    cache = None if args.no_cache else Path(args.cache or output.parent / ".skbert-cache")
    embedder = _embedder(args, cache).set_params(show_progress=not args.quiet)
    try:
        with caller_reports_truncation():  # counted in the report, said in the summary
            embedder.fit(texts[:1])
            check_output_columns(columns.ids, embedder.get_feature_names_out(), layout)  # before the work
            X, report = embedder.transform_with_report(texts)
    except KeyboardInterrupt:
        hint = " re-run the same command to resume from the cache" if cache else ""
        print(f"skbert: interrupted;{hint}", file=sys.stderr)
        return 130
    written = write_output(output, X, embedder.get_feature_names_out(), ids, layout,
                           column_types(Path(args.input), columns.ids))
    print(
        f"skbert: {len(texts)} texts -> {X.shape[1]} features; encoded {report.n_encoded}, "
        f"from cache {report.n_cache_hits}{_notes(n_null, args.on_null, report.n_truncated)}; "
        f"wrote {', '.join(map(str, written))}",
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

    chunk_rows = CHUNK_ROWS if args.chunk_rows is None else args.chunk_rows
    if chunk_rows < 1:
        raise UserError(f"--chunk-rows {chunk_rows}: at least 1")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: at least 1 (leave it out to run in this process)")
    columns = _text_columns(args)
    # Dask starts workers with OMP_NUM_THREADS=1: local workers get their share of the cores for torch
    threads = max(1, (os.cpu_count() or 1) // args.workers) if args.workers else None
    for option, name in zip(("--column", "--pair-column"), columns.texts):
        if not columns.ids and name in MADE_IDS:
            raise UserError(f"{option} {name!r}: the default id columns are {list(MADE_IDS)} (made: the file and "
                            "the row number); name the id columns with --id-column")
    made = () if columns.ids else MADE_IDS  # the default ids: made, whatever columns the input holds
    options = Options(list(columns.texts), list(columns.ids or MADE_IDS), args.layout or "list", threads, made)
    cache = Path(args.cache) if args.cache and not args.no_cache else None  # the parts are what resumes
    embedder = _embedder(args, cache, cache_memory_bytes=256 * 2**20)
    embedder.fit([("a", "b")] if columns.pairs else ["a"])
    client = _client(args)
    try:
        with tqdm(unit="row", desc="skbert", disable=args.quiet, delay=1.0) as bar:
            summary = stream_embed(embedder, args.input, output, options, chunk_rows=chunk_rows,
                                   on_null=args.on_null, client=client, progress=bar.update)
    except KeyboardInterrupt:
        print("skbert: interrupted; re-run the same command to resume (finished parts are kept)", file=sys.stderr)
        return 130
    finally:
        if client is not None:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
    print(
        f"skbert: {summary.rows} rows in {summary.parts} parts ({summary.parts_skipped} already complete) -> "
        f"{len(embedder.get_feature_names_out())} features; encoded {summary.encoded}, from cache "
        f"{summary.cache_hits}{_notes(summary.null_rows, args.on_null, summary.truncated)}"
        f"{f'; removed {summary.removed} stale part(s)' if summary.removed else ''}; wrote {output}",
        file=sys.stderr,
    )
    return 0


def embed(args) -> int:
    if args.cache and args.no_cache:
        raise UserError("--cache and --no-cache: give one of them")
    output = Path(args.output)
    suffix = output.suffix.lower()
    if suffix in WRITERS:
        return embed_file(args, output)
    if suffix and not output.is_dir():
        raise UserError(f"output {str(output)!r}: expected a .parquet or .npy file, or a directory (no suffix) "
                        "for a Parquet dataset")
    return embed_dataset(args, output)


def _joined_lists(argv: list[str]) -> list[str]:
    """``--layers -2,-1`` as ``--layers=-2,-1``: argparse takes a value that starts with "-" for an option."""
    out = []
    for token in argv:
        if out and out[-1] in _LIST_OPTIONS and _NEGATIVE_LIST.fullmatch(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as one line of the command's output (the line of code it points at means nothing here)."""
    print(f"skbert: warning: {message}", file=sys.stderr if file is None else file)


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(_joined_lists(sys.argv[1:] if argv is None else list(argv)))
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return embed(args)
    except KeyboardInterrupt:  # before the run's own handler (loading the model, reading the input)
        print("skbert: interrupted", file=sys.stderr)
        return 130
    except (UserError, TableError, ColumnError) as error:
        print(f"skbert: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as error:  # bad parameters or a model that cannot be found
        message = str(error).strip().replace("\n", "\n  ")
        print(f"skbert: error: {message}", file=sys.stderr)
        return 2

