"""Results as the papers published them -- never ours. Shown beside our measurements, always labelled.

Each table is a CSV file beside this module (long format: combination, region, method, dice in %; MetaKD's
AV-MNIST Table 3 is keyed by missing modality and rate, with accuracy in %; the
ProtoKD ablations have one column per ablated choice instead, and Mind the Gap's Table I is keyed by
modality, student recipe and teacher), and :data:`SOURCES` says where it comes
from. The combinations use the package's names (e.g. "FLAIR+T1ce").
"""

from pathlib import Path

import pandas as pd

from ..evaluation import dice_table


HERE = Path(__file__).parent

SOURCES = {
    "lckd_table1": "LCKD paper (Wang et al., 'Learnable Cross-modal Knowledge Distillation for Multi-modal "
                   "Learning with Missing Modality', MICCAI 2023, arXiv 2310.01035), Table 1: BraTS 2018, "
                   "Dice (%), 66 official validation cases scored online",
    "metakd_table1": "MetaKD paper (Wang et al., 'Meta-Learned Modality-Weighted Knowledge Distillation for "
                     "Robust Multi-Modal Learning with Missing Data', arXiv 2405.07155), Table 1: BraTS 2018, "
                     "Dice (%), non-dedicated training",
    "metakd_table3": "MetaKD paper (arXiv 2405.07155), Table 3: AV-MNIST, test accuracy (%) of training with one "
                     "modality available for only `rate` % of the training samples: (a) missing audio "
                     "(missing=audio, tested on images alone), (b) missing visual (missing=image, tested on audio "
                     "alone); LowerB a single-modality LeNet, UpperB trained and tested with both modalities",
    "lckd_table2": "LCKD paper (Wang et al., MICCAI 2023), Table 2: LCKD-s (single teacher) vs LCKD-m "
                   "(multi-teacher), BraTS 2018, Dice (%)",
    "protokd_table1": "ProtoKD paper (Shuai Wang et al., 'Prototype Knowledge Distillation for Medical "
                      "Segmentation with Missing Modality', ICASSP 2023), Table 1: BraTS 2018, Dice (%), "
                      "57 test cases, one single-modality student per modality; the paper's WT/CO/EC are "
                      "our WT/TC/ET, and its Avg is the mean of the three",
    "protokd_table2": "ProtoKD paper (ICASSP 2023), Table 2: loss ablation on T1, mean Dice (%) of WT/TC/ET",
    "protokd_table3": "ProtoKD paper (ICASSP 2023), Table 3: intra-class only vs intra- and inter-class "
                      "variation, mean Dice (%) of WT/TC/ET",
    "mindthegap_table4": "Mind the Gap paper (Tianyi Liu et al., 'Mind the Gap: Promoting Missing Modality Brain "
                         "Tumor Segmentation with Alignment', arXiv 2409.19366), Table IV: full-modality teachers "
                         "with each anchor P_mix, BraTS 2018, Dice (%); the paper's EC is our ET; its P^N_mix average (79.13) is not the mean of "
                         "its three regions (78.80)",
    "mindthegap_table1": "Mind the Gap paper (arXiv 2409.19366), Table I: single-modality students of five "
                         "recipes, distilled from the original teacher ('original') or from the paper's teacher "
                         "without alignment ('none') and with each anchor ('N', 'k', '*'), BraTS 2018, Dice (%); "
                         "'Imp' is the paper's improvement column of P*_mix over the original, printed as is "
                         "(4 of its 16 values differ from the difference of the printed averages)",
}


def paper_results(name: str):
    """The long DataFrame of a published table, with its source in ``.attrs["source"]``."""

    if name not in SOURCES:
        raise KeyError(f"no published table {name!r}; available: {', '.join(SOURCES)}")
    table = pd.read_csv(HERE / f"{name}.csv")
    table.attrs["source"] = SOURCES[name]
    return table


def paper_dice_table(name: str, methods=None, label: str = "paper: "):
    """A published table in the shape of :func:`mmkd_helpers.evaluation.dice_table` (values already in %),
    method names prefixed with ``label`` so that they can never be mistaken for ours."""

    table = paper_results(name)
    methods = methods or list(dict.fromkeys(table["method"]))
    results = {f"{label}{m}": table[table.method == m].assign(dice=lambda d: d.dice / 100) for m in methods}
    out = dice_table(results)
    out.attrs["source"] = SOURCES[name]
    return out
