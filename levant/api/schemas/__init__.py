"""Wire formats: pydantic models for what crosses HTTP, in Mistral's and OpenAI's shapes."""
