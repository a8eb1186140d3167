"""Writers of tiny data sets in the exact on-disk layouts the loaders read, and ways to break them.

Each writer mirrors the real layout (file names, folders, array shapes, split-file row formats)
at a few examples per split, so tests exercise the same parsing as the full data sets.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

CREMAD_EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


def write_wav(path: str, seconds: float, sample_rate: int, frequency: float, seed: int = 0) -> None:
    import soundfile

    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * sample_rate)) / sample_rate
    samples = 0.5 * np.sin(2 * np.pi * frequency * time) + 0.05 * rng.standard_normal(time.size)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, samples.astype(np.float32), sample_rate, subtype="PCM_16")


def write_jpg(path: str, value: int, size: tuple[int, int] = (40, 30)) -> None:
    from PIL import Image

    pixels = np.full((size[1], size[0], 3), value, np.uint8)
    pixels[:, : size[0] // 2, 0] = 255 - value
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def truncate_file(path: str, keep_bytes: int) -> None:
    """Cuts a file to its first ``keep_bytes`` bytes (a truncated wav or jpg)."""
    with open(path, "rb") as handle:
        head = handle.read(keep_bytes)
    with open(path, "wb") as handle:
        handle.write(head)


def write_avmnist(root: str, num_train: int = 30, num_test: int = 10, seed: int = 0) -> None:
    """MultiBench AV-MNIST: image/{train,test}_data.npy (N, 784), audio/... (N, 112, 112)."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "image"), exist_ok=True)
    os.makedirs(os.path.join(root, "audio"), exist_ok=True)
    for part, count in (("train", num_train), ("test", num_test)):
        labels = np.arange(count) % 10
        image = rng.uniform(0, 255, (count, 784)).astype(np.float32)
        image[:, 0] = labels * 25.0  # first pixel encodes the label, for mapping checks
        audio = rng.uniform(0, 255, (count, 112, 112)).astype(np.float32)
        np.save(os.path.join(root, "image", f"{part}_data.npy"), image)
        np.save(os.path.join(root, "audio", f"{part}_data.npy"), audio)
        np.save(os.path.join(root, f"{part}_labels.npy"), labels.astype(np.int64))


def write_cremad(
    root: str,
    train_per_class: int = 2,
    test_per_class: int = 1,
    frames_per_clip: int = 2,
    seconds: float = 1.2,
    frame_size: tuple[int, int] = (40, 30),
) -> dict[str, list[str]]:
    """OGM-GE CREMA-D: train.csv/test.csv ("clip,EMO"), AudioWAV/<clip>.wav (16 kHz, like the
    raw data), Image-01-FPS/<clip>/<00000>.jpg. Returns the clip ids of each csv."""
    clips: dict[str, list[str]] = {"train": [], "test": []}
    actor = 1001
    for part, per_class in (("train", train_per_class), ("test", test_per_class)):
        rows = []
        for emotion_index, emotion in enumerate(CREMAD_EMOTIONS):
            for _ in range(per_class):
                clip = f"{actor}_DFA_{emotion}_XX"
                actor += 1
                rows.append(f"{clip},{emotion}")
                clips[part].append(clip)
                write_wav(
                    os.path.join(root, "AudioWAV", f"{clip}.wav"),
                    seconds,
                    16000,
                    200 + 100 * emotion_index,
                    seed=actor,
                )
                for frame in range(frames_per_clip):
                    write_jpg(
                        os.path.join(root, "Image-01-FPS", clip, f"{frame * 30:05d}.jpg"),
                        40 * emotion_index,
                        frame_size,
                    )
        with open(os.path.join(root, f"{part}.csv"), "w") as handle:
            handle.write("\n".join(rows) + "\n")
    return clips


def write_kinetics_sounds(
    root: str,
    num_train: int = 8,
    num_test: int = 4,
    style: str = "ogm_ge",
    frames_per_clip: int = 4,
) -> dict[str, list[tuple[str, int]]]:
    """Kinetics-Sounds: split txt (OGM-GE "name,10,label" in my_*.txt or BalanceMM
    "name ... label" in *.txt), audio/<name>.npy (1024, 128), visual/<name>/frame_0000{t}.jpg."""
    rng = np.random.default_rng(0)
    rows: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for part, count in (("train", num_train), ("test", num_test)):
        lines = []
        for i in range(count):
            label = (7 * i + (part == "test")) % 31
            name = f"yt{part}{i:03d}_{i * 10:06d}_{i * 10 + 10:06d}"
            rows[part].append((name, label))
            lines.append(f"{name},10,{label}" if style == "ogm_ge" else f"{name} 10 {label}")
            fbank = rng.standard_normal((1024, 128)).astype(np.float32)
            os.makedirs(os.path.join(root, "audio"), exist_ok=True)
            np.save(os.path.join(root, "audio", f"{name}.npy"), fbank)
            for t in range(frames_per_clip):
                write_jpg(os.path.join(root, "visual", name, f"frame_0000{t}.jpg"), 20 * t)
        filename = f"my_{part}.txt" if style == "ogm_ge" else f"{part}.txt"
        with open(os.path.join(root, filename), "w") as handle:
            handle.write("\n".join(lines) + "\n")
    return rows


AVE_CATEGORIES = ("Church bell", "Dog", "Frying (food)", "Male speech, man speaking")


def write_ave(root: str, per_split: dict[str, int] | None = None) -> dict[str, list[str]]:
    """AVE: Annotations.txt (header) + trainSet/valSet/testSet.txt rows
    "Category&VideoID&Quality&Start&End", Audio-1004-SE/<id>.pkl (257, 1004),
    Image-01-FPS-SE/<id>/<00000>.jpg."""
    per_split = per_split or {"trainSet": 4, "valSet": 2, "testSet": 2}
    rng = np.random.default_rng(0)
    annotations = ["Category&VideoID&Quality&StartTime&EndTime"]
    videos: dict[str, list[str]] = {}
    counter = 0
    for split_file, count in per_split.items():
        lines = []
        videos[split_file] = []
        for _ in range(count):
            category = AVE_CATEGORIES[counter % len(AVE_CATEGORIES)]
            video = f"V{counter:03d}xYz-_q"
            counter += 1
            line = f"{category}&{video}&good&0&10"
            lines.append(line)
            annotations.append(line)
            videos[split_file].append(video)
            os.makedirs(os.path.join(root, "Audio-1004-SE"), exist_ok=True)
            with open(os.path.join(root, "Audio-1004-SE", f"{video}.pkl"), "wb") as handle:
                pickle.dump(rng.standard_normal((257, 1004)).astype(np.float32), handle)
            for t in range(4):
                write_jpg(os.path.join(root, "Image-01-FPS-SE", video, f"{t:05d}.jpg"), 30 * t)
        with open(os.path.join(root, f"{split_file}.txt"), "w") as handle:
            handle.write("\n".join(lines) + "\n")
    with open(os.path.join(root, "Annotations.txt"), "w") as handle:
        handle.write("\n".join(annotations) + "\n")
    return videos


def affect_data(
    sizes: tuple[int, int, int] = (12, 6, 6),
    dims: tuple[int, int, int] = (35, 74, 300),
    steps: int = 50,
    seed: int = 0,
) -> dict:
    """A MultiBench affect pickle's dict: {train, valid, test} -> vision/audio/text/labels/id."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, count in zip(("train", "valid", "test"), sizes, strict=True):
        vision_dim, audio_dim, text_dim = dims
        text = rng.standard_normal((count, steps, text_dim)).astype(np.float32)
        text[:, :10] = 0.0  # left zero padding, as MultiBench
        audio = rng.standard_normal((count, steps, audio_dim)).astype(np.float32)
        audio[0, 12, 0] = -np.inf  # after the left text padding (steps 0-9)
        data[split] = {
            "vision": rng.standard_normal((count, steps, vision_dim)).astype(np.float32),
            "audio": audio,
            "text": text,
            "labels": np.linspace(-3, 3, count).reshape(count, 1, 1).astype(np.float32),
            "id": np.array([[f"{split}_{i}".encode(), b"0"] for i in range(count)]),
        }
    return data


def write_affect(path: str, data: dict | None = None) -> dict:
    data = affect_data() if data is None else data
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(data, handle)
    return data


def write_fsdd(
    root: str, speakers: tuple[str, ...] = FSDD_SPEAKERS[:3], takes: tuple[int, ...] = (0, 5, 10)
) -> None:
    """FSDD: recordings/{digit}_{speaker}_{take}.wav, mono 8 kHz."""
    for digit in range(10):
        for s, speaker in enumerate(speakers):
            for take in takes:
                write_wav(
                    os.path.join(root, "recordings", f"{digit}_{speaker}_{take}.wav"),
                    0.3 + 0.05 * take / 10,
                    8000,
                    300 + 150 * digit,
                    seed=digit * 100 + s * 10 + take,
                )
