"""BraTS 2018-2021: registration-only data, so we explain how to get it and verify what the user got.

The checks on each file (modalities present, shapes and affines agree, label values, unreadable or
truncated files) belong to the course's reader, :mod:`mmkd_helpers.data`: ``verify`` runs exactly the
code that training will run, over every case, and reports every problem instead of stopping at the
first one.
"""

import sys

INSTRUCTIONS = """\
BraTS {years}: the data needs a (free) registration, so it cannot be downloaded for you.

1. Register and request the training data for the year you want:
   2018  https://www.med.upenn.edu/sbia/brats2018/registration.html
         (CBICA Image Processing Portal, https://ipp.cbica.upenn.edu/): 285 cases, HGG/ and LGG/
   2019  https://www.med.upenn.edu/cbica/brats2019/registration.html (same portal): 335 cases, HGG/ and LGG/
   2020  https://www.med.upenn.edu/cbica/brats2020/registration.html (same portal): 369 cases
   2021  https://www.synapse.org/#!Synapse:syn25829067 (Synapse account, join the challenge, accept
         the terms): 1251 cases, BraTS2021_Training_Data.tar
   Approval can take a few days; the link comes by e-mail. Get the *training* data: the validation
   and test sets have no label maps.
2. Unpack it under the data folder, e.g.
   {data_dir}/brats2018/
   so that every case is a folder named like its files (sub-folders such as HGG/ LGG/ are fine):
   <case>/<case>_flair.nii.gz  <case>_t1.nii.gz  <case>_t1ce.nii.gz  <case>_t2.nii.gz  <case>_seg.nii.gz
   Known quirk: in some copies of BraTS 2020, BraTS20_Training_355's label map is called
   W39_1998.09.19_Segm.nii; rename it to BraTS20_Training_355_seg.nii.
3. Check it (every case, every file; reports everything that is wrong):
   python -m data_download verify {data_dir}/brats2018
4. Point the course at it:
   DATA_DIR={data_dir}/brats2018   (notebook parameter)
   mmkd train --data {data_dir}/brats2018
"""


def instructions(data_dir) -> str:
    return INSTRUCTIONS.format(years="2018, 2019, 2020, 2021", data_dir=data_dir)


def verify(root, out=None) -> int:
    """Read every case under ``root`` (BraTS or MSD layout) with the course's reader; 0 if all are fine."""
    out = out or sys.stdout
    import numpy as np

    from mmkd_helpers.constants import LABELS
    from mmkd_helpers.data import DataError, find_cases, read_case

    try:
        refs = find_cases(root)
    except DataError as exc:
        print(f"FAIL  {exc}", file=out)
        return 1
    print(f"{root}: {len(refs)} cases ({refs[0].layout} layout)", file=out, flush=True)
    problems = {}
    for ref in refs:
        try:
            case = read_case(ref)
        except DataError as exc:
            problems[ref.case_id] = str(exc)
        else:
            if case.label is None:
                expected = ref.image_paths[0].parent / f"{ref.case_id}_seg.nii.gz"
                problems[ref.case_id] = f"{expected}: file missing (the label map; training needs one)"
            else:
                present = [value for value in LABELS if np.count_nonzero(case.label == value)]
                print(f"ok    {ref.case_id}  {'x'.join(map(str, case.images.shape[1:]))}  labels {present}",
                      file=out, flush=True)
                continue
        print(f"FAIL  {ref.case_id}: {problems[ref.case_id]}", file=out, flush=True)
    print(f"\n{len(refs)} cases checked: {len(refs) - len(problems)} ok, {len(problems)} with problems", file=out)
    for case_id, problem in problems.items():
        print(f"  {case_id}: {problem}", file=out)
    if not problems:
        print(f"Ready: DATA_DIR={root}  or  mmkd train --data {root}", file=out)
    return 1 if problems else 0
