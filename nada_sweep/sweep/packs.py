"""The sweep's trials grouped into packs, the trials one Ray worker trains together (nada_sweep.adapt.pack).

Trials share a pack when nada_sweep.adapt.pack.pack_key lets them (one generator, the same guiding CLIP models,
device and precision; light modes only: the sweep trains `full` trials alone, see _FULL) and their frozen side
comes as one W+ per step (the sweep's shared bank, or no style mixing); any other trial is a pack of one,
trained alone exactly as before packs existed. Within one key the trials are taken domain by domain, so a
domain's trials share packs: they train side by side and reach each early-stopping rung in the same pack step,
and a domain's results arrive together in the gallery. The domains go longest first, so that long trials share
packs with long ones: a pack steps until its longest member is done, and a short member beside a long one only
lengthens neither. Packs then start longest first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nada_sweep.adapt.settings import AdaptConfig

_LIVE_MIXING = "faithful trials with style mixing draw their crossover per render (the live frozen side)"
# A pack takes full members with layer selection one step at a time (batched, they leave their alone runs'
# weights by 1e-2 and more: nada_sweep.adapt.pack._steps_alone); at k = 0 they stay within 3e-7 but, measured on
# CPU, a pack of 8 is faster only on the tiny models (1.31x) and slower at real widths (0.89x at 512 channels:
# its grouped convolutions), and no GPU has measured them yet: the sweep trains full trials alone.
_FULL = ("full trials train alone in the sweep: with k > 0 a pack steps them one at a time, and at "
         "k = 0 packs of them were slower at 512 channels")


def alone_reason(config: AdaptConfig) -> str | None:
    """Why this trial cannot share a pack, or None."""
    from nada_sweep.adapt.params import Full

    if config.faithful and config.mixing > 0:
        return _LIVE_MIXING
    return _FULL if config.params == Full.name else None


def group_packs(configs: Sequence[AdaptConfig], domains: Sequence[str], size: int, at_once: int = 1
                ) -> list[list[int]]:
    """Indices of `configs` (the sweep's trials in order, of `domains`) in packs of at most `size`, longest
    pack first.

    The trials that can share packs are spread evenly over as few packs as `size` allows, but over no fewer
    than `at_once` (the packs the cluster trains at the same time) while there are trials enough, and over a
    multiple of `at_once` where that stays within the trials: one pack of 8 on a 2-core machine would leave
    a core idle where two packs of 4 use both, and 20 trials in packs of 7, 7 and 6 would end with one pack
    training alone where 4 packs of 5 end two by two.
    """
    from nada_sweep.adapt.pack import pack_key

    costs = [estimated_cost(config) for config in configs]
    groups: dict[object, list[int]] = {}
    packs: list[list[int]] = []
    for index, config in enumerate(configs):
        if size == 1 or alone_reason(config):
            packs.append([index])
        else:
            groups.setdefault(pack_key(config), []).append(index)
    for members in groups.values():
        longest: dict[str, float] = {}
        first: dict[str, int] = {}
        for index in members:
            longest[domains[index]] = max(longest.get(domains[index], 0.0), costs[index])
            first.setdefault(domains[index], index)
        members = sorted(members, key=lambda i: (-longest[domains[i]], first[domains[i]], i))
        count = max(math.ceil(len(members) / size), min(len(members), at_once))
        count = min(len(members), math.ceil(count / at_once) * at_once)
        packs += [members[i * len(members) // count:(i + 1) * len(members) // count] for i in range(count)]
    order = sorted(range(len(packs)), key=lambda i: (-sum(costs[j] for j in packs[i]), packs[i][0]))
    return [packs[i] for i in order]


def estimated_cost(config: AdaptConfig) -> float:
    """A trial's work in latents passed through generator and CLIP; a rough measure, used only to order packs.

    Tune starts trials in the order it is given them. Starting the longest first (longest-processing-time-first
    scheduling) lets the sweep end on short ones instead of leaving workers idle while one long pack finishes.
    """
    per_step = config.batch
    if config.selects_layers:
        per_step += config.auto_layer_batch * config.auto_layer_iters / config.auto_layer_every
    mapper = config.mapper
    return config.steps * per_step + (mapper.steps * mapper.batch if mapper else 0)
