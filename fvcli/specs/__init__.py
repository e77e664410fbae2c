"""What the user asks: settings, YAML specs, the target grammar and its objects, limits. No torch."""
