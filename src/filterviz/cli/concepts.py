"""``filterviz concepts``: a dictionary learned over a layer's activations on a folder of photos, every
concept drawn beside its dataset patches, into a folder with a page."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from filterviz.cli.arguments import COUNT, SEED, add_cluster_options, add_photo_job
from filterviz.cli.commands import load_network, method_from_arguments, use_compilation_cache


def add_concepts(subcommands: Any, add_compute_options: Callable, add_method_options: Callable) -> None:
    """The ``concepts`` subcommand, with the ascent options every drawing command shares."""
    from filterviz.core.dictionaries import KINDS

    command = subcommands.add_parser(
        "concepts",
        help="a dictionary of concepts (sparse autoencoder or NMF) learned over a layer's activations on a "
        "folder of photos, each concept drawn beside its strongest dataset patches",
    )
    add_photo_job(command, "the layer whose activations are factorised")
    command.add_argument("--kind", choices=KINDS, default="topk", help="the dictionary (default topk)")
    command.add_argument("--concepts", type=COUNT, default=64, help="concepts in the dictionary (default 64)")
    command.add_argument("--active", type=COUNT, default=8, help="concepts active per vector (default 8)")
    command.add_argument(
        "--fit-steps", type=COUNT, default=2000, help="minibatches of the fit (default 2000)"
    )
    command.add_argument(
        "--fit-batch-size", type=COUNT, default=4096, help="vectors per minibatch (default 4096)"
    )
    command.add_argument(
        "--positions",
        type=COUNT,
        default=None,
        help="vectors per photo at seeded positions (default: every one)",
    )
    command.add_argument(
        "--image-size", type=COUNT, default=224, help="photos fitted to SIZExSIZE (default 224)"
    )
    command.add_argument("--size", type=COUNT, default=128, help="each concept's picture side (default 128)")
    command.add_argument("--seed", type=SEED, default=0, help="positions, fit and pictures (default 0)")
    command.add_argument(
        "--no-stability", action="store_true", help="skip the second seed's fit that measures stability"
    )
    command.add_argument("--image-batch-size", type=COUNT, default=32, help="photos per batch (default 32)")
    command.add_argument(
        "--batch-size", type=COUNT, default=16, help="pictures per compiled call (default 16)"
    )
    command.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    add_compute_options(command, steps=None)
    add_method_options(command, sweep=True, default="lucid")  # how each concept is drawn
    add_cluster_options(command)
    command.set_defaults(run=run_concepts)


def run_concepts(args: argparse.Namespace) -> None:
    """Learn and draw the concepts the arguments name; one summary line on process 0."""
    import jax

    from filterviz.cli.volume import join_cluster
    from filterviz.concept_atlases.concepts import concepts

    join_cluster(args)
    network, params = load_network(args)
    method = method_from_arguments(args)
    use_compilation_cache(args)
    found = concepts(
        params, args.images, args.layer, out=args.out, network=network, kind=args.kind,
        concepts=args.concepts, active=args.active, fit_steps=args.fit_steps,
        fit_batch_size=args.fit_batch_size, positions=args.positions, image_size=args.image_size,
        method=method, size=args.size, seed=args.seed, stability=not args.no_stability,
        image_batch_size=args.image_batch_size, batch_size=args.batch_size,
        progress=False if args.quiet else None,
    )  # fmt: skip
    if not args.quiet and jax.process_index() == 0:
        measures = found.measures
        print(
            f"wrote {found.page}: {args.concepts} {args.kind} concepts of {found.layer}; held out: "
            f"unexplained variance {measures['unexplained_variance']:.3f}, "
            f"mean L0 {measures['mean_l0']:.1f}, dead {measures['dead_fraction']:.0%}"
            + (f", stability {measures['stability']:.2f}" if "stability" in measures else ""),
            file=sys.stderr,
        )
