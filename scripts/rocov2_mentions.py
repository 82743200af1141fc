"""How often a ROCOv2 test caption names its curated labels, and how a finished run scores on the captions that do.

The 18 curated CUIs (modality, body region, projection) are partly read from the image, not the caption: a caption
model can only infer a label the caption does not name. A keyword pattern per CUI (heuristic: synonyms and common
abbreviations, written by hand, case-insensitive) marks a label as named; the script reports, on the seed-42 test
split of `configs/text_rocov2_cuis_manual.json`, the share of each label's captions that name it, the share of
captions naming every gold label, and for each run folder given, subset accuracy on both groups of captions.

    python scripts/rocov2_mentions.py --train_file ../shared/data/rocov2/rocov2_valid.csv \
        outputs/compare-rocov2/plain outputs/compare-rocov2/adapted
"""
import argparse
import csv
import json
import re
from pathlib import Path

from medheads.training.arguments import parse_args
from medheads.training.text_classification import ARGUMENT_CLASSES, load_splits

KEYWORDS = {
 "C0000726": r"abdom", "C0002978": r"angio|arteriogra|venogra|\bdsa\b|portogra|aortogra",
 "C0006141": r"breast|mammo", "C0024485": r"\bmri?\b|magnetic resonance|\bt1|\bt2|flair|diffusion|\bdwi\b|\bmra\b|\bmrcp\b",
 "C0023216": r"\blegs?\b|knee|\bfoot|\bfeet|ankle|femur|femoral|tibia|fibula|\bhips?\b|\btoes?\b|thigh|\bcalf|lower (limb|extremit)|patell|calcane|metatars",
 "C0030797": r"pelvi|\bhips?\b|sacr|iliac|acetab|bladder|uter|ovar|prostat|rect",
 "C0032743": r"\bpet\b|positron|fdg", "C0037303": r"skull|crani|\bhead\b|brain|cerebr|intracran|orbit|sinus",
 "C0037949": r"spin|vertebra|lumbar|cervical|thoracic|\bdis[ck]|\b[lct]\d\b",
 "C0040405": r"\bct\b|computed tomogra|\bcect\b|\bhrct\b|\bcta\b|\bmdct\b|\bcbct\b|tomogra|\bscan",
 "C0041618": r"ultraso|sonogra|\bus\b|\busg\b|doppler|echo",
 "C0205129": r"sagittal", "C0817096": r"chest|thora|lung|pulmon|mediastin|pleura|cardi|heart",
 "C1140618": r"\barms?\b|\bhands?\b|wrist|elbow|shoulder|humer|radius|\bulna|finger|forearm|clavic|upper (limb|extremit)",
 "C1306645": r"x-?\s?rays?|radiograph|plain film|roentgen", "C1996865": r"postero-?\s?anterior|\bpa\b",
 "C1999039": r"antero-?\s?posterior|\bap\b",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("runs", nargs="*", help="finished train-text run folders on this split (predict_results.txt)")
    parser.add_argument("--train_file", default=None)
    parser.add_argument("--output", default="outputs/rocov2-mentions.json")
    args = parser.parse_args()
    extra = ["--train_file", args.train_file] if args.train_file else []
    _, data_args, training_args = parse_args(ARGUMENT_CLASSES, ["configs/text_rocov2_cuis_manual.json", "--output_dir",
                                                                "/tmp/rocov2-mentions-unused"] + extra)
    test = load_splits(data_args, True, training_args.seed)["test"]
    per, names_all = {}, []
    for row in test:
        text = row["text"].lower()
        named = True
        for label in row["labels"]:
            hit = re.search(KEYWORDS[label], text) is not None if label in KEYWORDS else True
            count = per.setdefault(label, [0, 0])
            count[0] += 1
            count[1] += hit
            named &= hit
        names_all.append(named)
    out = {"test_captions": len(test), "captions_naming_every_label": sum(names_all) / len(test),
           "per_label_share_named": {k: {"captions": v[0], "named": round(v[1] / v[0], 3)} for k, v in sorted(per.items())},
           "runs": {}}
    for run in args.runs:
        with open(Path(run) / "predict_results.txt", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        assert len(rows) == len(test), f"{run}: {len(rows)} predictions for {len(test)} test captions"
        exact = []
        for row, gold in zip(rows, test):
            g = set(x for x in row["gold"].split(";") if x)
            assert g <= set(gold["labels"]), f"{run}: predictions are not in the split's order"
            exact.append(g == set(x for x in row["prediction"].split(";") if x))
        named = [e for e, n in zip(exact, names_all) if n]
        unnamed = [e for e, n in zip(exact, names_all) if not n]
        out["runs"][run] = {"subset_accuracy": sum(exact) / len(exact),
                            "on_captions_naming_every_label": sum(named) / len(named),
                            "on_the_other_captions": sum(unnamed) / len(unnamed)}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
