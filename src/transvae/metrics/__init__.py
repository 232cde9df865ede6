"""Image-quality metrics beyond the reconstruction figures of ``transvae.evaluation`` (colour fidelity)."""
