// EosinTokenizer
