// EosinModels
