"""What comes out of a sweep: tidy tables read from MLflow alone, seed-averaged sensitivity tables."""
