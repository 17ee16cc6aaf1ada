"""One module per flow. Flows only compose tasks; the domain logic lives in tasks/."""
