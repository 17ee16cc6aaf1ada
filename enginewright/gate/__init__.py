"""The accuracy gate's statistics: paired non-inferiority tests, the sequential decision, exact error rates."""
