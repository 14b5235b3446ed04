"""Data: AST features, augmentation, datasets over AST datafiles, and `prepare` engines.

from fastast_cli.data import load_manifest, ASTDataset, waveform_to_fbank
m = load_manifest("data/demo")                       # or .../manifest.yaml
train = m.dataset_for("train", training=True, freqm=24, timem=48, cache_dir=m.cache_dir)
fbank, target = train[0]                             # [T, 128] float32, [classes] float32
x = waveform_to_fbank(wave, 44100, target_length=m.target_length, mean=m.mean, std=m.std)
# the general form: any length policy and frame shift (here ElasticAST's native length, q = 2)
x = waveform_fbank(wave, 44100, length=LengthPolicy.native(1024), frame_shift_ms=20.0,
                   stats=(m.mean, m.std))
"""

from fastast_cli.data.audio import AudioReadError, load_mono, read_audio
from fastast_cli.data.datafile import LabelSet, read_datafile, read_labels_csv
from fastast_cli.data.dataset import ASTDataset
from fastast_cli.data.features import (
    AST_NORM_STATS,
    LengthPolicy,
    fbank,
    normalize,
    num_frames,
    pad_or_cut,
    raw_features,
    waveform_fbank,
    waveform_to_fbank,
)
from fastast_cli.data.manifest import Fold, Manifest, load_manifest, write_manifest

__all__ = [
    "AST_NORM_STATS",
    "ASTDataset",
    "AudioReadError",
    "Fold",
    "LabelSet",
    "LengthPolicy",
    "Manifest",
    "fbank",
    "load_manifest",
    "load_mono",
    "normalize",
    "num_frames",
    "pad_or_cut",
    "raw_features",
    "read_audio",
    "read_datafile",
    "read_labels_csv",
    "waveform_fbank",
    "waveform_to_fbank",
    "write_manifest",
]
