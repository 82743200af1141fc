#!/usr/bin/env python
"""Write the small synthetic sample the demo trains on (`scripts/sample_data/`).

The sample is made up by this script from templates and word lists (and, for images, drawn shapes): it exists so the
demo trains for a minute on any machine without downloads. Real results use the public datasets (see README).
Re-running it rewrites the same files (fixed seed).
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "sample_data"

# -- NER: JNLPBA-style entity types -----------------------------------------------------------------------------------
ENTITIES = {
    "protein": ["IL-2", "NF-kappa B", "c-Jun", "STAT3", "TNF-alpha", "CD28", "GATA-1", "p53", "interleukin-6",
                "c-Fos", "IkappaB alpha", "Oct-2", "glucocorticoid receptor", "CD4", "protein kinase C", "AP-1"],
    "cell_type": ["T cells", "B cells", "monocytes", "macrophages", "erythroid cells", "peripheral blood lymphocytes",
                  "human neutrophils", "CD4+ T lymphocytes", "natural killer cells", "dendritic cells"],
    "cell_line": ["Jurkat cells", "HeLa cells", "U937 cells", "K562 cells", "THP-1 cells", "HL-60 cells"],
    "DNA": ["IL-2 promoter", "kappa B site", "c-fos gene", "enhancer region", "HIV-1 LTR", "beta-globin gene",
            "GATA motif", "promoter region"],
    "RNA": ["IL-2 mRNA", "c-myc mRNA", "beta-globin transcripts", "TNF-alpha mRNA", "GM-CSF mRNA"],
}
TEMPLATES = [
    "{protein} binds to the {DNA} in {cell_type} .",
    "Expression of {RNA} was induced in {cell_line} by {protein} .",
    "We show that {protein} activates the {DNA} in {cell_line} .",
    "{protein} and {protein} regulate {RNA} levels in {cell_type} .",
    "Stimulation of {cell_type} increased {protein} activity .",
    "The {DNA} is required for {RNA} accumulation in {cell_line} .",
    "In {cell_type} , {protein} inhibits transcription of the {DNA} .",
    "Levels of {RNA} were low in resting {cell_type} but high in {cell_line} .",
]

# -- Captions: ROCOv2-style curated CUIs -------------------------------------------------------------------------------
MODALITIES = {
    "C0040405": ["CT", "computed tomography", "axial CT scan", "contrast-enhanced CT"],
    "C0024485": ["MRI", "T2-weighted MR image", "magnetic resonance imaging", "T1-weighted MRI"],
    "C1306645": ["radiograph", "plain X-ray", "plain film", "X-ray"],
    "C0041618": ["ultrasound", "sonography", "Doppler ultrasound", "ultrasonography"],
    "C0032743": ["PET", "FDG PET", "PET-CT fusion image"],
    "C0002978": ["angiogram", "digital subtraction angiography", "CT angiography"],
}
REGIONS = {
    "C0817096": ["chest", "thorax", "lungs"],
    "C0000726": ["abdomen", "upper abdomen", "abdominal cavity"],
    "C0030797": ["pelvis", "pelvic region"],
    "C0037303": ["skull", "cranium", "head"],
    "C0037949": ["spine", "lumbar spine", "cervical vertebrae", "thoracic spine"],
    "C0006141": ["breast", "left breast", "right breast"],
    "C0023216": ["knee", "left leg", "femur", "ankle"],
    "C1140618": ["wrist", "right hand", "elbow", "shoulder"],
}
DIRECTIONS = {"C0205129": ["sagittal", "sagittal view of the"], "C1996865": ["posteroanterior", "PA"],
              "C1999039": ["anteroposterior", "AP"]}
FINDINGS = ["showing a mass", "with a fracture", "demonstrating a cystic lesion", "without abnormality",
            "showing fluid collection", "with a calcified nodule", "after treatment", "showing the lesion (arrow)"]


def ner_sentence(rng: random.Random) -> list[tuple[str, str]]:
    rows = []
    for piece in rng.choice(TEMPLATES).split():
        if piece.startswith("{") and piece.endswith("}"):
            kind = piece[1:-1]
            words = rng.choice(ENTITIES[kind]).split()
            rows += [(word, ("B-" if i == 0 else "I-") + kind) for i, word in enumerate(words)]
        else:
            rows.append((piece, "O"))
    return rows


def write_conll(path: Path, sentences) -> None:
    with path.open("w") as handle:
        handle.write("-DOCSTART-\tO\n\n")
        for sentence in sentences:
            handle.writelines(f"{token}\t{label}\n" for token, label in sentence)
            handle.write("\n")


def caption(rng: random.Random) -> tuple[str, list[str]]:
    modality = rng.choice(sorted(MODALITIES))
    region = rng.choice(sorted(REGIONS))
    labels = [modality, region]
    text = f"{rng.choice(MODALITIES[modality])} of the {rng.choice(REGIONS[region])} {rng.choice(FINDINGS)}"
    if rng.random() < 0.3:
        direction = rng.choice(sorted(DIRECTIONS))
        labels.append(direction)
        text = f"{rng.choice(DIRECTIONS[direction]).capitalize()} {text}"
    return text[0].upper() + text[1:] + ".", sorted(labels)


def xray(rng: np.random.Generator, pneumonia: bool, size: int = 28) -> np.ndarray:
    """A cartoon chest X-ray: dark lungs in a bright body; pneumonia adds bright patchy opacities in a lung."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = 0.75 - 0.1 * np.abs(x - 0.5)
    for cx in (0.3, 0.7):
        lung = ((x - cx) / 0.16) ** 2 + ((y - 0.5) / 0.32) ** 2 < 1
        image[lung] = 0.25
    # pneumonia: a few faint-to-clear opacities; some normal films carry one faint benign spot, so classes overlap
    spots = rng.integers(1, 4) if pneumonia else int(rng.random() < 0.35)
    for _ in range(spots):
        cx, cy = rng.choice([0.3, 0.7]) + rng.normal(0, 0.05), rng.uniform(0.3, 0.75)
        blob = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * rng.uniform(0.04, 0.08) ** 2)))
        image += (rng.uniform(0.1, 0.4) if pneumonia else rng.uniform(0.05, 0.15)) * blob
    image += rng.normal(0, 0.1, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def main(out: Path = OUT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(13)
    write_conll(out / "ner_train.tsv", [ner_sentence(rng) for _ in range(400)])
    write_conll(out / "ner_validation.tsv", [ner_sentence(rng) for _ in range(80)])
    with (out / "captions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "caption", "cuis_manual"])
        for i in range(600):
            text, labels = caption(rng)
            writer.writerow([f"sample_{i:04d}", text, ";".join(labels)])
    np_rng = np.random.default_rng(13)
    arrays = {}
    for split, n in (("train", 240), ("val", 80)):
        labels = np_rng.integers(0, 2, n)
        arrays[f"{split}_images"] = np.stack([xray(np_rng, bool(label)) for label in labels])
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    np.savez_compressed(out / "xray_sample.npz", **arrays)
    print(f"wrote the sample to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default: scripts/sample_data)")
    main(parser.parse_args().out)
