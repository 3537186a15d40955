// EosinTensor
