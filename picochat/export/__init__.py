"""Taking a trained model elsewhere: `picochat export hf` (Hugging Face transformers format)."""
