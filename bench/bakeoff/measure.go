package main

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sample is what the process has used and written up to a moment.
type sample struct {
	wall        time.Time
	user, sys   time.Duration
	writeBytes  int64 // /proc/self/io write_bytes: what this process sent towards the block layer
	deviceBytes int64 // sectors written on the data directory's device (every process: noisy)
}

func cpuNow() (user, sys time.Duration) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

func take(dev string) sample {
	s := sample{wall: time.Now()}
	s.user, s.sys = cpuNow()
	s.writeBytes = procIO("write_bytes")
	s.deviceBytes = deviceWritten(dev)
	return s
}

func procIO(field string) int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if ok && k == field {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

// deviceOf names, in /proc/diskstats, the device holding dir.
func deviceOf(dir string) string {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return ""
	}
	return fmt.Sprintf("%d %d", unix.Major(st.Dev), unix.Minor(st.Dev))
}

// deviceWritten is the bytes written to dev (major minor) since boot.
func deviceWritten(dev string) int64 {
	b, err := os.ReadFile("/proc/diskstats")
	if err != nil || dev == "" {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[0]+" "+f[1] == dev {
			n, _ := strconv.ParseInt(f[9], 10, 64)
			return n * 512
		}
	}
	return -1
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
