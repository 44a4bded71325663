"""Tasks: datasets of conversations that know how to score a reply (interface in common.py).

gsm8k.py (calculator tool calls), mmlu.py, arc.py, humaneval.py, smoltalk.py (SmolTalk parquet,
Chit-Chat), spelling.py (SpellingBee, SimpleSpelling), identity.py, synthetic.py (offline demo
word problems and small talk). registry.py builds them from specs like "gsm8k:test:100".
"""
