"""adapterscope: what a fine-tuning adapter really changes inside a model.

Every module, by layer, bottom to top. A module imports only from its own layer or the layers below it, at the
top of the module and inside functions alike (``tests/unit/test_layout.py`` checks the code against this map):

1 pure tools: arrays, statistics, records and files; no model loading; they import only each other
    paths             where things live: the project root, data/results/figures, atomic writes
    params            notebook parameters: the tagged cell, checked overrides, YAML profiles
    results           one results JSON per run: values, provenance, macros, artefact digests
    stats             small-sample statistics: rank correlations, permutation p-values, bootstrap CIs
    threads           a cap on torch's intra-op CPU threads for one block
    cka               exact linear CKA, streamed over tokens, biased and debiased
    outliers          massive-activation tokens and the linear CKA they carry
    crosscoder        the model-diffing crosscoder: a sparse dictionary over paired activations
    crosscoder_train  fast crosscoder training (BatchTopK + AuxK, or the L1 baseline)
    divergence        output divergence (KL, agreement, perplexity) and activation change, by batch
    geometry          geometry of displacements: principal subspaces, angles, overlap, separation
    scenes            seeded procedural scenes with question/answer pairs correct by construction
    power             power of the ledger's tests at a stated effect (simulated or closed form)
2 loaders: what a run starts from
    models            embedded, local and hub models: resolution, conversion, loading, activation sites
    corpora           the corpora by name, user sources, deterministic splits, the neutral eval set
    textgen           seeded offline generators of the synthetic fine-tuning corpora
3 model runners: train or run a model
    finetune          LoRA fine-tuning with peft (the seed protocol by default)
    capture           paired base/fine-tuned activations from one loaded backbone
    vlm               the embedded vision-language model: projector training and scoring
4 analysis: what the runs mean
    interventions     causal clamping of a crosscoder's fine-tune-only latents
    regimes           regime probing of one VLM with and without its adapter (05b)
    escapes           escape routes of a VLM adapter (06)
    decorrelation     internal vs output change over the grid (10)
    depth             where in depth an adapter moves the representation
    dose              how internal and output change grow with the training dose (11)
    portability       whether an adapter's function transfers across architectures (07)
    composition       merging adapters' weights vs composing them at decoding time (12)
    calibration       the internal-axis instruments calibrated at the scale they run (13)
    intruders         intruder dimensions and the displacement outside the base's principal subspace
    explain           what an adapter changed, shown: hotspots, token shifts, difference lens
    latents           latent cards: a crosscoder latent's contexts, frequencies, histogram and decoder lens
5 reporting and ledger: the paper's view
    macros            paper macros of statistics (NaN as a dash, a statistic's N/P/Lo/Hi/Why)
    latex             LaTeX tables under paper/generated/tables/
    plotting          the project's figure style; figures as PDF and PNG
    ledger            the findings ledger's data, measured values and verdicts
    timings           where a build's time goes (``make timings``)
6 orchestration: run notebooks
    pipeline          headless notebook runs skipped by content digest; the paper build
    executors         where a profile's jobs run: local processes or submitit/slurm
    lab               ``make lab``: JupyterLab on the notebooks with the project's kernel
    findings          a finding's reruns in a scratch copy, its record and check (reads the pipeline)
7 user tools: the installed command
    audit             the two-axis audit of a (base model, LoRA adapter) pair
    audit_inputs      the audit's input checks, before any model loads
    cli               the ``adapterscope`` command
"""

__version__ = "0.1.0"
