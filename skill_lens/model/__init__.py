"""The loaded model: loading a TransformerBridge and describing its FFN, the fast path past unhooked components, the one record skill_lens keeps about it, tiny random models for tests."""
