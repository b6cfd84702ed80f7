package firstseen

import "time"

// SetClock makes b read the time from now (tests).
func (b *Book) SetClock(now func() time.Time) { b.now = now }

// Encode is a record as the shared tier holds it (tests write forgeries).
func Encode(r Record) []byte { return encode(r) }

// Decode reads a stored record (fuzzing).
func Decode(raw []byte) Record { return decode(raw) }
