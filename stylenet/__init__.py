"""stylenet: fast feed-forward neural style transfer."""
