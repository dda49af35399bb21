package blacklist

// key returns the set key of an E.164 number: its digits as an integer. It
// is one-to-one because E.164 numbers have at most 15 digits and never start
// with 0. ok is false for anything that is not "+" and 1 to 15 digits.
func key[T string | []byte](e164 T) (k uint64, ok bool) {
	if len(e164) < 2 || len(e164) > 16 || e164[0] != '+' || e164[1] == '0' {
		return 0, false
	}
	for i := 1; i < len(e164); i++ {
		c := e164[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		k = k*10 + uint64(c-'0')
	}
	return k, true
}
