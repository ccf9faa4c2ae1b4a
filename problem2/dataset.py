"""Synthetic stick-figure keypoint data: the course's generator and file layout, its checks, KeypointDataset.
`python dataset.py` generates a dataset by hand; the other scripts generate the default one on first use.
Layout (the course's `datasets/keypoints/`): <root>/keypoints/{train,val,test}/NNNNNN.png (128x128 'L', white,
black 3-px strokes) and {split}_annotations.json = {"images": [{"id", "file_name", "keypoints": [[x, y] x 5]}],
"keypoint_names", "num_keypoints"}; ids run on across splits. The test split is ours: a course folder with only
train/val works, test falls back to val. Coordinates follow codec.py's convention (labels are pixel centres).
The hand labels are ambiguous by construction (kept on purpose): arm angles (a, b) draw the same picture as (-b, -a)
with the hands swapped, so about half the images have left_hand to the right of right_hand. canonical_hands=True
relabels left_hand := the hand with the smaller x.
"""
import functools
import hashlib
import json
import math
import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset

from codec import IMG_SIZE, KEYPOINT_NAMES, NUM_KEYPOINTS, canonicalize_hands, encode, encode_heatmaps, sigma_for_peak
from common import ArgumentParser, UsageError, file_sha256, positive, read_json, run_cli, write_json

HERE = Path(__file__).resolve().parent
DEFAULT_DATA_ROOT = HERE / "data"  # gitignored; holds keypoints/
DEFAULT_SPLIT_SIZES = {"train": 1000, "val": 200, "test": 200}
COURSE_CENTER_RANGE = (40, 88)  # figure centre (cx, cy), inclusive integers
GENERATOR_FILE = "generator.json"  # written by generate_dataset next to the annotations
HEAD_ABOVE_CENTRE = 20          # the head is drawn at (cx, cy - 20): figure centre = head + (0, 20)
MIN_PEAK = 0.5                  # a heatmap target must reach this at its keypoint's nearest cell (else: no signal)


def sample_figure(rng, center_range=COURSE_CENTER_RANGE, exclude=None):
    """One figure's (centre, angles_rad, spread), by default from the course's distribution. center_range: (lo, hi)
    for both axes or per axis, inclusive; exclude: a (lo, hi) box the centre is redrawn out of."""
    ranges = np.asarray(center_range).reshape(-1, 2)      # [[lo, hi]] for both axes, or [[x_lo, x_hi], [y_lo, y_hi]]
    lo, hi = np.broadcast_to(ranges, (2, 2)).T
    while True:
        cx, cy = (int(v) for v in rng.integers(lo, hi + 1))
        if exclude is None or not (exclude[0] <= cx <= exclude[1] and exclude[0] <= cy <= exclude[1]):
            break
    a_left, a_right = np.radians(rng.uniform(-60, 60, size=2))
    spread = float(rng.uniform(10, 30))
    return (cx, cy), (float(a_left), float(a_right)), spread


def render_figure(center, angles_rad, spread):
    """Render a stick figure exactly as the course does; returns (PIL 'L' image, 5 integer [x, y])."""
    cx, cy = center
    a_left, a_right = angles_rad
    head = (cx, cy - HEAD_ABOVE_CENTRE)
    shoulder, hip_top, hip = (cx, cy - 6), (cx, cy - 12), (cx, cy + 12)
    left_hand = (cx - int(20 * math.sin(a_left)), cy - 6 + int(20 * math.cos(a_left)))
    right_hand = (cx + int(20 * math.sin(a_right)), cy - 6 + int(20 * math.cos(a_right)))
    left_foot = (cx - int(spread), cy + 12 + 25)
    right_foot = (cx + int(spread), cy + 12 + 25)

    img = Image.new("L", (IMG_SIZE, IMG_SIZE), 255)
    draw = ImageDraw.Draw(img)
    draw.ellipse([head[0] - 8, head[1] - 8, head[0] + 8, head[1] + 8], outline=0, width=3)
    draw.line([hip_top, hip], fill=0, width=3)
    draw.line([shoulder, left_hand], fill=0, width=3)
    draw.line([shoulder, right_hand], fill=0, width=3)
    draw.line([hip, left_foot], fill=0, width=3)
    draw.line([hip, right_foot], fill=0, width=3)
    return img, [list(p) for p in (head, left_hand, right_hand, left_foot, right_foot)]


def write_split(keypoints_dir, split, first_id, count, seed, sampler=sample_figure):
    """Write `count` figures of one split (PNGs + annotations); image `id` depends only on (seed, id), drawn from
    np.random.default_rng([seed, id]) by `sampler`."""
    keypoints_dir = Path(keypoints_dir)
    (keypoints_dir / split).mkdir(parents=True, exist_ok=True)
    images = []
    for image_id in range(first_id, first_id + count):
        img, kps = render_figure(*sampler(np.random.default_rng([seed, image_id])))
        file_name = f"{image_id:06d}.png"
        img.save(keypoints_dir / split / file_name)
        images.append({"id": image_id, "file_name": file_name, "keypoints": kps})
    write_json(keypoints_dir / f"{split}_annotations.json",
                      {"images": images, "keypoint_names": KEYPOINT_NAMES, "num_keypoints": NUM_KEYPOINTS})


def generate_dataset(root, split_sizes=None, seed=0, sampler=sample_figure, sampler_name="course"):
    """Generate <root>/keypoints/ (+ generator.json: seed, sizes, sampler) in a temp folder renamed at the end, so an
    interrupted run never leaves a half-written dataset. Returns the keypoints folder."""
    split_sizes = dict(DEFAULT_SPLIT_SIZES if split_sizes is None else split_sizes)
    final = Path(root) / "keypoints"
    if final.exists():
        raise UsageError(f"{final} already exists; delete it first to regenerate")
    tmp = Path(root) / f".keypoints.tmp{os.getpid()}"
    try:
        first_id = 0
        for split, count in split_sizes.items():
            write_split(tmp, split, first_id, count, seed, sampler)
            first_id += count
        write_json(tmp / GENERATOR_FILE, {"seed": seed, "split_sizes": split_sizes, "sampler": sampler_name})
        try:
            os.replace(tmp, final)
        except OSError:  # another process wrote <root>/keypoints meanwhile
            raise UsageError(f"{final} was written by another process while this one generated it; "
                             f"use that one, or delete it and rerun") from None
    except OSError as e:  # a full disk, a file-size limit, a read-only folder
        raise UsageError(f"cannot write the dataset under {root}: {e.strerror or e}; free space or choose a writable "
                         f"--out") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# the translation test set: course figures centred outside the training range (in x or y), wholly inside the image
# (head top cy - 28 >= 0, feet cy + 37 <= 127, feet x = cx +- 30 at most)
sample_shifted_figure = functools.partial(sample_figure, center_range=((30, 97), (28, 90)), exclude=COURSE_CENTER_RANGE)


def shifted_test_dir(root=None, num_images=200, seed=1):
    """The translation test set (test split only), generated on first use under problem2/data/shifted/."""
    root = DEFAULT_DATA_ROOT / "shifted" if root is None else Path(root)
    if not (root / "keypoints" / "test_annotations.json").exists():
        generate_dataset(root, {"test": num_images}, seed=seed, sampler=sample_shifted_figure, sampler_name="shifted")
    return root / "keypoints"


def resolve_keypoints_dir(data_dir=None, seed=0):
    """The course-layout folder of `data_dir` (<root> or <root>/keypoints; None: problem2/data/, generated on first
    use), checked by check_dataset, so bad data stops a script before any training."""
    if data_dir is None:
        kp_dir = DEFAULT_DATA_ROOT / "keypoints"
        if not (kp_dir / "train_annotations.json").exists():
            print(f"[data] no dataset at {kp_dir}; generating the default one ({DEFAULT_SPLIT_SIZES}, seed {seed})",
                  flush=True)
            generate_dataset(DEFAULT_DATA_ROOT, seed=seed)
        return check_dataset(kp_dir)
    data_dir = Path(data_dir)
    for kp_dir in (data_dir / "keypoints", data_dir):
        if (kp_dir / "train_annotations.json").exists():
            return check_dataset(kp_dir)
    raise UsageError(f"no train_annotations.json in {data_dir} or {data_dir / 'keypoints'}; point --data-dir at a "
                     f"course-layout folder, or generate one with: python problem2/dataset.py --out {data_dir}")


def split_paths(keypoints_dir, split):
    """(image_dir, annotation_file) of a split; 'test' falls back to 'val' (with a warning) when absent."""
    keypoints_dir = Path(keypoints_dir)
    if split == "test" and not (keypoints_dir / "test_annotations.json").exists():
        print(f"[data] WARNING: no test split in {keypoints_dir}; reporting on val instead", flush=True)
        split = "val"
    return keypoints_dir / split, keypoints_dir / f"{split}_annotations.json"


def annotations_sha256(keypoints_dir):
    """Hash of a folder's annotation files (train, val, test: those present)."""
    return file_sha256(p for p in (Path(keypoints_dir) / f"{s}_annotations.json" for s in ("train", "val", "test"))
                       if p.exists())


def data_fingerprint(keypoints_dir):
    """What identifies a dataset in recipes and provenance (never its path): a hash of the annotation files, a hash of
    every image's decoded pixels (as KeypointDataset reads them, each split's in annotation order: a changed image is
    new data, a PNG re-encoded by another Pillow is not), the split sizes and, for generated data, the generator's seed
    and sampler. Call it on a folder check_dataset has passed."""
    keypoints_dir = Path(keypoints_dir)
    splits = {s: keypoints_dir / f"{s}_annotations.json" for s in ("train", "val", "test")}
    entries = {s: read_json(f)["images"] for s, f in splits.items() if f.exists()}
    pixels = hashlib.sha256()
    for split, es in entries.items():
        for e in es:
            pixels.update(_read_image(keypoints_dir / split / e["file_name"], e.get("id")).tobytes())
    gen = read_json(keypoints_dir / GENERATOR_FILE, default={})
    return {"annotations_sha256": annotations_sha256(keypoints_dir), "pixels_sha256": pixels.hexdigest()[:16],
            "split_sizes": {split: len(es) for split, es in entries.items()},
            "generator_seed": gen.get("seed"), "generator_sampler": gen.get("sampler")}


def figure_centre(kp_img_px):
    """Figure centre (cx, cy) [..., 2] in image px from keypoints [..., K, 2]: the head plus (0, 20)."""
    kp = torch.as_tensor(kp_img_px, dtype=torch.float64)
    return kp[..., 0, :] + torch.tensor([0.0, float(HEAD_ABOVE_CENTRE)], dtype=torch.float64)


def _parse_annotations(annotation_file):
    """The validated image entries of a course annotation file; any problem is a UsageError naming the file, the
    entry (index and id) and what is wrong."""
    annotation_file = Path(annotation_file)
    if not annotation_file.exists():
        raise UsageError(f"annotation file {annotation_file} not found; generate data with "
                         f"`python problem2/dataset.py --out <root>` or point --data-dir at the course folder")
    try:
        data = json.loads(annotation_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{annotation_file}: malformed JSON ({e}); fix or replace the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UsageError(f"{annotation_file}: expected an object with an 'images' list (course format)")
    if not data["images"]:
        raise UsageError(f"{annotation_file}: 'images' is empty")
    for i, entry in enumerate(data["images"]):
        where = f"{annotation_file}: images[{i}]" + (f" (id {entry.get('id')})" if isinstance(entry, dict) else "")
        if not isinstance(entry, dict) or "file_name" not in entry or "keypoints" not in entry:
            raise UsageError(f"{where}: each entry needs 'id', 'file_name' and 'keypoints'")
        if not isinstance(entry["file_name"], str) or not entry["file_name"]:
            raise UsageError(f"{where}: 'file_name' must be a file name, got {entry['file_name']!r}")
        kps = entry["keypoints"]
        ok = (isinstance(kps, list) and len(kps) == NUM_KEYPOINTS and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p)
            for p in kps))
        if not ok:
            raise UsageError(f"{where}: 'keypoints' must be {NUM_KEYPOINTS} numeric [x, y] pairs "
                             f"({', '.join(KEYPOINT_NAMES)}), got {kps!r}")
        for name, (x, y) in zip(KEYPOINT_NAMES, kps):
            if not (-0.5 <= x <= IMG_SIZE - 0.5 and -0.5 <= y <= IMG_SIZE - 0.5):
                raise UsageError(f"{where}: {name} at ({x}, {y}) lies outside the {IMG_SIZE}x{IMG_SIZE} image "
                                 f"(pixel centres 0..{IMG_SIZE - 1}); fix the label or remove the image")
    return data["images"]


def image_path(image_dir, annotation_file, index, entry):
    """The image file of entry `index` of an annotation file: a path inside image_dir (no absolute path, no '..', no
    link out of the folder) to a regular file (not a FIFO or device), else a UsageError naming the annotation file,
    the entry and the path. A missing file is left to _read_image to name."""
    where, name = f"{annotation_file}: images[{index}] (id {entry.get('id')})", entry["file_name"]
    image_dir = Path(image_dir)
    path = image_dir / name
    try:
        inside = not Path(name).is_absolute() and ".." not in Path(name).parts and (
            not path.exists() or path.resolve().is_relative_to(image_dir.resolve()))
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise UsageError(f"{where}: file_name {name!r} leads outside {image_dir}; images are read only from inside "
                         f"their split's folder: fix the entry or move the image there")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise UsageError(f"{where}: {path} is not a regular file (a FIFO, device or folder); replace it with the PNG")
    return path


def _read_image(path, image_id, decode=True):
    """One PNG, checked (it exists, decodes, is 128x128): its pixels as uint8 [128, 128] grayscale (any mode converted
    to 'L'); decode=False checks the header only. Any problem is a UsageError naming the file and its id."""
    where = f"image file {path} (id {image_id})"
    if not path.exists():
        raise UsageError(f"{where} is missing; generate the data again (python problem2/dataset.py) or point "
                         f"--data-dir at the complete course folder")
    try:
        with Image.open(path) as im:
            if im.size != (IMG_SIZE, IMG_SIZE):
                raise UsageError(f"{where} is {im.size[0]}x{im.size[1]}, not {IMG_SIZE}x{IMG_SIZE}: this dataset's "
                                 f"keypoints are in {IMG_SIZE}-px image space; resize it and its keypoints, or "
                                 f"remove it")
            return np.asarray(im.convert("L"), dtype=np.uint8) if decode else None
    except OSError as e:
        raise UsageError(f"{where} cannot be decoded: {e}") from None


def check_dataset(keypoints_dir):
    """Validate every split present (annotations, image files, sizes) before any training. Returns the folder."""
    keypoints_dir = Path(keypoints_dir)
    for split in ("train", "val", "test"):
        ann = keypoints_dir / f"{split}_annotations.json"
        if ann.exists():
            if not (keypoints_dir / split).is_dir():
                raise UsageError(f"image folder {keypoints_dir / split} not found (named by {ann.name})")
            for i, e in enumerate(_parse_annotations(ann)):
                _read_image(image_path(keypoints_dir / split, ann, i, e), e.get("id"), decode=False)
    return keypoints_dir


class KeypointDataset(Dataset):
    """A split in memory, every PNG decoded once. Items: (image [1, 128, 128] in [0, 1], target): [K, hm, hm] Gaussian
    heatmaps (output_type='heatmap', sigma in hm px) or [2K] unit coordinates ('regression'). Attributes: images,
    keypoints [N, K, 2] (image px), targets, image_ids, file_names."""

    def __init__(self, image_dir, annotation_file, output_type='heatmap', heatmap_size=64, sigma=2.0,
                 canonical_hands=False):
        if output_type not in ("heatmap", "regression"):
            raise ValueError(f"output_type must be 'heatmap' or 'regression', got {output_type!r}")
        self.output_type, self.heatmap_size, self.sigma = output_type, heatmap_size, sigma
        self.canonical_hands = canonical_hands
        image_dir = Path(image_dir)
        entries = _parse_annotations(annotation_file)
        self.image_ids = [e.get("id") for e in entries]
        self.file_names = [e["file_name"] for e in entries]
        pixels = [_read_image(image_path(image_dir, annotation_file, i, e), e.get("id")) for i, e in enumerate(entries)]
        self.images = torch.from_numpy(np.stack(pixels)[:, None]).float().div_(255.0)
        self.keypoints = torch.from_numpy(np.asarray([e["keypoints"] for e in entries], dtype=np.float32))
        if canonical_hands:
            self.keypoints = canonicalize_hands(self.keypoints)
        self.targets = encode(output_type, self.keypoints, heatmap_size, sigma)
        if output_type == "heatmap":
            self._check_signal(annotation_file)

    def _check_signal(self, annotation_file):
        """Refuse targets whose peak is under MIN_PEAK for some keypoint (sigma too small for the grid: the target all
        but vanishes), naming the worst entry and the sigma that would work."""
        peaks = self.targets.amax((-2, -1))  # [N, K]
        if peaks.min() >= MIN_PEAK:
            return
        i, k = divmod(int(peaks.argmin()), peaks.shape[1])
        raise UsageError(f"--sigma {self.sigma:g} (heatmap px) leaves the {KEYPOINT_NAMES[k]} heatmap of "
                         f"{annotation_file}: images[{i}] (id {self.image_ids[i]}) peaking at {float(peaks[i, k]):.3f} "
                         f"(under {MIN_PEAK}) on a {self.heatmap_size}x{self.heatmap_size} grid: use --sigma >= "
                         f"{math.ceil(100 * sigma_for_peak(self.keypoints, self.heatmap_size, MIN_PEAK)) / 100:g}")

    def generate_heatmap(self, keypoints, height, width):
        """Gaussian heatmaps [K, height, width] for keypoints [K, 2] (x, y) given in 128-px image space,
        mapped to heatmap px with the module's convention; sigma (heatmap px) is self.sigma."""
        return encode_heatmaps(keypoints, (height, width), self.sigma)

    def keep_first(self, n):
        """Keep only the first n images (train.py --num-train); returns self."""
        self.images, self.keypoints, self.targets = self.images[:n], self.keypoints[:n], self.targets[:n]
        self.image_ids, self.file_names = self.image_ids[:n], self.file_names[:n]
        return self

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        return self.images[idx], self.targets[idx]


def make_loader(dataset, batch_size=32, shuffle=False, seed=0):
    """DataLoader over an in-memory KeypointDataset, no worker processes (they only add IPC overhead for data
    already in RAM); shuffling is seeded for reproducibility."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def load_split(keypoints_dir, split, output_type="heatmap", heatmap_size=64, sigma=2.0, canonical_hands=False,
               limit=None):
    """KeypointDataset of one split of a course-layout folder (test falls back to val)."""
    image_dir, annotation_file = split_paths(keypoints_dir, split)
    ds = KeypointDataset(image_dir, annotation_file, output_type, heatmap_size, sigma, canonical_hands)
    return ds if limit is None else ds.keep_first(limit)


def main(argv=None):
    p = ArgumentParser(description="Generate the synthetic stick-figure keypoint dataset in the "
                                "course's layout (<out>/keypoints/{train,val,test}/ + *_annotations.json).")
    p.add_argument("--out", type=Path, default=DEFAULT_DATA_ROOT, help="root folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical files (default: 0)")
    p.add_argument("--num-train", type=positive(int, 1), default=DEFAULT_SPLIT_SIZES["train"])
    p.add_argument("--num-val", type=positive(int, 1), default=DEFAULT_SPLIT_SIZES["val"])
    p.add_argument("--num-test", type=positive(int, 0), default=DEFAULT_SPLIT_SIZES["test"],
                   help="held-out test split (ours; 0 for course-only train/val)")
    args = p.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out} is a file, not a folder")
    sizes = {"train": args.num_train, "val": args.num_val}
    if args.num_test > 0:
        sizes["test"] = args.num_test
    t0 = time.time()
    out = generate_dataset(args.out, sizes, args.seed)
    print(f"wrote {sum(sizes.values())} images to {out} in {time.time() - t0:.2f}s")


if __name__ == "__main__":
    run_cli(main)
