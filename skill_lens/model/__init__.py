"""The loaded model: loading a TransformerBridge and describing its FFN, the fast path past unhooked components, the causal inputs' keys/values computed once, tiny random models for tests."""
