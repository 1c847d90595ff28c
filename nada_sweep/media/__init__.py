"""Real photos and videos: photos projected into a generator's W+ (invert), latent walks and morphs (video)."""
