package natstest

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer is a bytes.Buffer that a logger (or a subprocess) may write to
// while the test reads it: for checking what reached the log.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Tail is the last n bytes written, trimmed: for failure messages.
func (s *Buffer) Tail(n int) string {
	str := s.String()
	if len(str) > n {
		str = str[len(str)-n:]
	}
	return strings.TrimSpace(str)
}
