"""li2019's neural representational-similarity regularizer (Li et al. 2019, Secs. 2-3).

The training loss becomes ``L = L_task + alpha * L_similarity`` (Eq. 7) with, for a batch of
stimulus pairs (i, j), ``L_similarity = mean [arctanh(S_cnn_ij) - arctanh(S_neural_ij)]^2``
(Eq. 8). ``S_cnn`` combines the centred cosine similarities of K layers (Eq. 9) with trainable
weights ``gamma = softmax(logits)`` (Eq. 10; equal at the start, supplement). Each step draws a
batch of task images (the trainer) and a batch of stimulus pairs (here, Sec. 3 / Fig. 3).

Target ``S_neural`` (from a ``neural_data`` plugin):

* ``responses``: trial-averaged responses scaled by the signal-to-noise weight of each neuron,
  ``w_a = sigma_a / eta_a`` (Eq. 1; signal: variance over stimuli of the trial mean; noise: mean
  over stimuli of the variance over trials, both unbiased, NaN repeats ignored), centred over
  stimuli and normalized, ``S_ij = e_i . e_j`` (Eq. 2).
* ``similarity``: the data's precomputed matrix (e.g. li2019's denoised Eq. 6 matrix).
* ``shuffle`` control (li2019 'Shuffle'): rows and columns permuted jointly by one seeded
  permutation of the stimuli, so the target keeps its values and remains a similarity matrix,
  but of the wrong images.
* ``features`` control (li2019 'VGG', conv3_1 of an ImageNet-trained VGG19): the Eq. 9
  similarity of a layer of another registered model on the same stimuli.

Deviations and choices (the paper leaves these open):

* Stimuli are fitted to the model's input (``bioprior.plugin.fit_images``: gray <-> RGB,
  bilinear resize to size x size, so non-square stimuli such as li2019's 64 x 36 are stretched).
* Layers: ``auto`` takes 5 evenly spaced candidate layers, first and last included. On a ResNet
  the candidates are the stem output and every residual block's output, so ResNet18 gives the
  stem and the end of each of its four stages: the outputs of conv layers 1, 5, 9, 13, 17
  (li2019 Sec. 3; ResNet34: stem, layer2.0, layer3.0, layer3.4, layer4.2). Other nets: their
  hidden activation modules. Layers can also be named (fnmatch patterns on module names) or given
  as indices among the candidates. List this constraint after constraints that replace modules
  (e.g. ``activation``), so that it hooks the modules that run.
* Centering (Eq. 9): ``f_bar`` is the mean over all stimuli. Recomputing it at every step
  would cost a pass over all stimuli, so it starts at the exact mean over (up to 1,024 of) the
  stimuli at the first step, and each step centres on ``m * batch mean + (1 - m) * running
  mean`` (``centering_momentum`` m; gradient flows through the batch part only), which becomes
  the new running mean. ``m = 1`` uses the current pair batch's mean only.
* arctanh (Eq. 8) is applied to similarities clipped to ``[-1 + clip_eps, 1 - clip_eps]``
  (the paper names no epsilon); pairs are drawn with i != j, so the diagonal (1) is never used.
* The ``responses`` target averages repeats before Eq. 2 (li2019 denoised single trials with a
  predictive model, Eq. 6; use a ``similarity`` matrix for that). The Eq. 1 weights use every
  stimulus shown at least twice (li2019: the 100 repeated 'oracle' images); one repeat: uniform
  weights. ``shuffle`` uses the training seed unless ``shuffle_seed`` is set.
* gamma's logits get no weight decay (the paper does not say). The stimuli pass through the
  model in training mode, as the task batch does (BatchNorm normalizes them with their own batch
  statistics), but BatchNorm running statistics are restored after each stimulus pass, so the
  statistics used at inference are the task data's alone (the paper does not say; with stimuli
  unlike the task images, e.g. natural patches vs digits, mixed statistics put the test accuracy
  of a regularized model 33 points below its training accuracy in a digits run).
* Training history (per epoch): ``similarity_loss``, ``similarity_r`` (Pearson r of S_cnn with
  the target over the epoch's pairs) and ``gamma_<layer>``. The stimuli and target are dropped
  after the last epoch; the saved model keeps gamma only.
* ``features``: no pretrained weights are available offline, so the feature model is the
  registered model at its seeded initialization, or whatever weights its own parameters load
  (e.g. ``timm:vgg19`` with ``pretrained_file``: a .safetensors of ImageNet VGG19 weights);
  it sees the stimuli standardized with their own per-channel statistics.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from bioprior.plugin import NeuralDataRef, PluginParams, hookimpl

LI2019 = (
    "Li, Brendel, Walker, Cobos, Muhammad, Reimer, Bethge, Sinz, Pitkow & Tolias (2019), "
    "Learning from brains how to regularize machines (NeurIPS)"
)


# -- parameters ------------------------------------------------------------------------------


class FeatureTarget(PluginParams):
    """The 'features' control: the similarity of a layer of another model on the stimuli."""

    model: str = Field(
        description="A registered model (bioprior plugins -k model), e.g. timm:vgg19."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Its parameters (geometry None: the task model's input; the stimuli are "
        "fitted to its in_channels / input_size; e.g. pretrained_file for timm weights).",
    )
    layer: str = Field(description="Module name of the layer (e.g. features.11: VGG19 conv3_1).")
    seed: int = Field(default=0, description="Seed of the model's initialization.")

    @model_validator(mode="after")
    def _known(self, info: ValidationInfo) -> FeatureTarget:
        from pydantic import ValidationError

        from bioprior.plugin import UnknownPluginError, get_registry

        registry = (info.context or {}).get("registry") or get_registry()
        try:
            registry.get("model", self.model).parse_params(self.params, registry)
        except UnknownPluginError as exc:
            raise ValueError(str(exc)) from None
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ValueError(f"params.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        return self


class NeuralSimilarityParams(PluginParams):
    alpha: float = Field(
        default=20.0,
        ge=0,
        le=1e4,
        description="Regularization strength (Eq. 7; li2019 main text: 20, supplement 2-32).",
    )
    layers: Literal["auto"] | list[str | int] = Field(
        default="auto",
        description="The K layers of Eq. 9-10. auto: 5 evenly spaced candidates (ResNet: stem + "
        "residual block outputs, i.e. ResNet18's conv layers 1, 5, 9, 13, 17 as in li2019; "
        "others: hidden activations). Or a list of module-name patterns (fnmatch, e.g. "
        "['act1', 'layer1']) and/or indices among the candidates (0 = first, -1 = last).",
    )
    data: NeuralDataRef = Field(
        default=NeuralDataRef.model_construct(name="synthetic_v1", params={}),
        description="Neural data plugin giving stimuli and responses / similarities "
        "(default synthetic_v1: synthetic, not recordings).",
    )
    target: Literal["auto", "responses", "similarity"] = Field(
        default="auto",
        description="Target S_neural: from the responses (Eq. 1-2) or the data's precomputed "
        "similarity matrix; auto: the matrix when the data has one.",
    )
    snr_weighting: bool = Field(
        default=True, description="Scale each neuron by its signal-to-noise ratio (Eq. 1)."
    )
    shuffle: bool = Field(
        default=False,
        description="'Shuffle' control: permute the target's stimuli (rows and columns jointly).",
    )
    shuffle_seed: int | None = Field(
        default=None, description="Seed of the shuffle (None: the training seed)."
    )
    features: FeatureTarget | None = Field(
        default=None,
        description="Feature control: target = the similarity of a layer of another model "
        "(li2019's VGG19 conv3_1) instead of the neural data; only its stimuli are used.",
    )
    pair_batch: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description="Stimulus pairs per step (None: half the task batch, so both pathways see "
        "as many images, li2019 Sec. 4.1).",
    )
    centering_momentum: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Weight of the current pair batch in the centering mean of Eq. 9 (the rest "
        "is a running mean, started at the mean over the stimuli); 1: the batch mean only.",
    )
    clip_eps: float = Field(
        default=1e-3,
        gt=0,
        lt=0.5,
        description="arctanh is applied to similarities clipped to [-1 + eps, 1 - eps] "
        "(arctanh(1 - 1e-3) = 3.8).",
    )

    @model_validator(mode="after")
    def _nonempty(self) -> NeuralSimilarityParams:
        if isinstance(self.layers, list) and not self.layers:
            raise ValueError("layers: give at least one layer (or 'auto')")
        return self


@hookimpl
def register_constraints(register):
    register(
        name="neural_similarity",
        factory="bioprior.plugins.neural_similarity.nn:NeuralSimilarity",
        params=NeuralSimilarityParams,
        version="1",
        citation=LI2019,
        description="li2019: + alpha [arctanh(S_cnn) - arctanh(S_neural)]^2 over stimulus pairs; "
        "S_cnn: softmax-weighted centred cosine similarity of K layers (shuffle / features "
        "controls).",
    )
