"""Open video and image models (Wan, LTX-Video, HunyuanVideo, CogVideoX, FLUX, SD3.5) run through diffusers.

`families` says what each model family can do and how a request maps onto its pipeline; `weights`
checks a local weights dir; `installed` is the data dir's `models.toml`; `options` are the opt-in
memory and speed switches; `backend` runs a pipeline behind the engine's Backend protocol.
"""
