package main

import (
	"errors"
	"io"
	"os"
	"syscall"
)

const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
	ficlone  = 0x40049409
)

// extent is a byte range [Start, Start+Length).
type extent struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
}

// dataExtents lists the allocated (non-hole) ranges of f, as the file system reports them.
func dataExtents(path string) ([]extent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	var out []extent
	var off int64
	for off < size {
		start, err := f.Seek(off, seekData)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) {
				break // no data after off
			}
			return nil, err
		}
		end, err := f.Seek(start, seekHole)
		if err != nil {
			return nil, err
		}
		out = append(out, extent{start, end - start})
		off = end
	}
	return out, nil
}

// sparseCopy copies src to dst keeping holes (cp --sparse=always semantics for holes the source
// already has); it tries a reflink first, which is instant on file systems that support it.
func sparseCopy(src, dst string, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, out.Fd(), ficlone, in.Fd()); e == 0 {
		return out.Truncate(size)
	}
	extents, err := dataExtents(src)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for _, e := range extents {
		if err := copyRange(in, out, e, buf); err != nil {
			return err
		}
	}
	return out.Truncate(size)
}

// copyRange copies one extent, skipping all-zero chunks so they stay holes.
func copyRange(in, out *os.File, e extent, buf []byte) error {
	for off := e.Start; off < e.Start+e.Length; {
		n := int64(len(buf))
		if rest := e.Start + e.Length - off; rest < n {
			n = rest
		}
		got, err := in.ReadAt(buf[:n], off)
		if err != nil && !(errors.Is(err, io.EOF) && got > 0) {
			return err
		}
		if !allZero(buf[:got]) {
			if _, err := out.WriteAt(buf[:got], off); err != nil {
				return err
			}
		}
		off += int64(got)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
