"""noor-tiny: a small text-to-video diffusion model built on diffusers' classes that ships with Noor."""
