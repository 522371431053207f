"""The commands that work at volume into a folder: ``sweep``, ``atlas``, ``top``, ``examples``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from filterviz.cli.commands import (
    UsageError,
    load_network,
    method_from_arguments,
    parse_filters,
    parse_layers,
    parse_size,
    use_compilation_cache,
)
from filterviz.errors import SettingError, printable
from filterviz.progress import count_of


def join_cluster(args: argparse.Namespace) -> None:
    """With any of the cluster options, join this process to the others of one jax.distributed run."""
    import jax

    if args.coordinator or args.num_processes is not None or args.process_id is not None or args.distributed:
        # Before anything touches a device: this joins the processes into one runtime. With no
        # arguments JAX finds the cluster itself (SLURM, Open MPI, Kubernetes, Cloud TPU).
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def sweep(args: argparse.Namespace) -> None:
    import jax

    from filterviz.io.photos import load_image, resize_image
    from filterviz.sweeps.sweep import sweep as run_sweep

    join_cluster(args)
    if args.cpu_devices != 1:
        from filterviz.runtime import split_cpu_into_devices

        split_cpu_into_devices(args.cpu_devices or None)
    network, _ = load_network(args, weights=False)
    chosen_layers, chosen_filters = _sweep_plan(args, network)
    height, width = parse_size(args.size or "128")
    start = None
    if args.start is not None:
        start = load_image(args.start, max_pixels=args.max_pixels)
        if args.size is not None:  # a photo keeps its own size unless --size is given
            start = resize_image(start, height, width)
    method = method_from_arguments(args)
    use_compilation_cache(args)
    network, params = load_network(args)
    result = run_sweep(
        params,
        args.out,
        layers=chosen_layers,
        filters=chosen_filters,
        size=(height, width),
        method=method,
        seed=args.seed,
        start=start,
        precision=args.precision,
        raw=args.raw,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        progress=False if args.quiet else None,
        network=network,
    )
    for problem in result.problems:
        print(f"filterviz: redone: {problem}", file=sys.stderr)
    page = _write_atlas(args.out) if jax.process_index() == 0 else None
    if not args.quiet:
        where = (
            f" (process {jax.process_index()} of {jax.process_count()})" if jax.process_count() > 1 else ""
        )
        print(
            f"{count_of(result.written, 'filter')} written, {result.skipped} already done, in "
            f"{result.seconds:.1f} s on {count_of(jax.device_count(), 'device')}{where}",
            file=sys.stderr,
        )
        if page is not None:
            print(f"atlas: {page}", file=sys.stderr)


def _sweep_plan(
    args: argparse.Namespace, network: Any
) -> tuple[list[str] | None, dict[str, list[int]] | None]:
    """The layers (None: all a sweep draws) and filters (None: all) ``--layers`` and ``--filters`` name."""
    layers = parse_layers(args.layers, network)
    if args.filters == "all":
        return layers, None
    return layers, {
        name: parse_filters(args.filters, network, name) for name in (layers or network.visual_layers)
    }


def _write_atlas(folder: str) -> Path:
    """The sweep's atlas, each problem it found on one line of stderr; returns the page."""
    from filterviz.sweeps.atlas import write_atlas

    atlas = write_atlas(folder)
    for problem in atlas.problems:
        print(f"filterviz: atlas: {problem}", file=sys.stderr)
    return atlas.page


def atlas(args: argparse.Namespace) -> None:
    from filterviz.sweeps.atlas import write_atlas

    written = write_atlas(args.folder)
    for problem in written.problems:
        print(f"filterviz: left out: {problem}", file=sys.stderr)
    print(written.page)


def top(args: argparse.Namespace) -> None:
    from filterviz.io.files import FIGURE_FORMATS, check_writable
    from filterviz.io.plots import filter_grid, save_figure
    from filterviz.sweeps.atlas import DEAD_ACTIVATION, load_pictures, top_filters

    check_writable(args.out, FIGURE_FORMATS)
    entries = top_filters(args.folder, args.layer, args.count)
    if not entries:
        raise UsageError(f"{args.folder} has no finished filters of {args.layer}")
    labels = [
        f"{e['filter']}: {e['activation']:.1f}" + (" dead" if e["activation"] <= DEAD_ACTIVATION else "")
        for e in entries
    ]
    figure = filter_grid(
        load_pictures(args.folder, entries),
        labels,
        columns=args.columns,
        title=f"{args.layer}, strongest first",
    )
    save_figure(figure, args.out)
    print(
        f"wrote {args.out}: the {count_of(len(entries), 'strongest filter')} of {args.layer}", file=sys.stderr
    )


def examples(args: argparse.Namespace) -> None:
    import jax

    from filterviz.dataset_examples.examples import examples as find_examples

    join_cluster(args)
    layers = parse_layers(args.layers, load_network(args, weights=False)[0])  # checked before any loading
    network, params = load_network(args)
    found = find_examples(
        params,
        args.images,
        layers,
        out=args.out,
        network=network,
        count=args.count,
        image_size=args.image_size,
        fit=args.fit,
        ranking=args.ranking,
        image_batch_size=args.image_batch_size,
        progress=False if args.quiet else None,
    )
    if jax.process_index() != 0:
        return  # process 0 reports for every process
    for path, reason in found.skipped:
        print(f"filterviz: skipped {printable(path)}: {printable(reason)}", file=sys.stderr)
    if not args.quiet:
        read = len(found.images) - len(found.skipped)
        print(
            f"wrote {Path(args.out) / 'examples.jsonl'}: {count_of(len(found.records), 'filter')}, the best "
            f"{args.count} of {count_of(read, 'image')} each",
            file=sys.stderr,
        )


def activation_atlas(args: argparse.Namespace) -> None:
    import jax

    from filterviz.activation_atlases.atlas import activation_atlas as draw_atlas

    join_cluster(args)
    zoom = None
    if args.zoom is not None:
        try:
            zoom = [int(part) for part in args.zoom.split(",")]
        except ValueError:
            raise SettingError(f"--zoom takes grids like 10,20,40, got {args.zoom!r}") from None
    network, params = load_network(args)
    if args.steps is None and args.method == "lucid":
        from filterviz.activation_atlases.atlas import ICON_STEPS

        args.steps = ICON_STEPS  # an icon's default, as the API's
    method = method_from_arguments(args)
    use_compilation_cache(args)
    drawn = draw_atlas(
        params, args.images, args.layer, out=args.out, network=network, grid=args.grid, zoom=zoom,
        method=method, size=args.size, positions=args.positions, image_size=args.image_size,
        min_count=args.min_count, seed=args.seed, image_batch_size=args.image_batch_size,
        batch_size=args.batch_size, progress=False if args.quiet else None, overwrite=args.overwrite,
    )  # fmt: skip
    if not args.quiet and jax.process_index() == 0:  # process 0 reports for every process
        cells = ", ".join(f"{len(c.counts)} of {g}x{g}" for g, c in drawn.levels.items())
        print(
            f"wrote {drawn.page}: {len(drawn.vectors):,} vectors of {args.layer}; cells drawn: {cells}",
            file=sys.stderr,
        )
