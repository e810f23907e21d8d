// Command bakeoff measures candidate store engines for chatr on its
// workload: µs of CPU and bytes written per message with an fsync before
// every commit returns, and the cost of the reads chatr makes. See
// README.md.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Result is one engine on one workload, measured in a process of its own.
type Result struct {
	Run      int    `json:"run"`
	Engine   string `json:"engine"`
	Workload string `json:"workload"`
	Err      string `json:"err,omitempty"`

	Messages int  `json:"messages"`
	Commits  int  `json:"commits"`
	Capped   bool `json:"capped"` // stopped by the workload's time cap

	WallS          float64 `json:"wall_s"`
	CPUPerMsgUS    float64 `json:"cpu_us_per_msg"`
	UserPerMsgUS   float64 `json:"user_us_per_msg"`
	SysPerMsgUS    float64 `json:"sys_us_per_msg"`
	WritePerMsg    float64 `json:"write_bytes_per_msg"`  // /proc/self/io
	DevicePerMsg   float64 `json:"device_bytes_per_msg"` // the whole device, every process
	FilesBytes     int64   `json:"files_bytes"`
	MsgPerS        float64 `json:"msg_per_s"`
	CommitP50MS    float64 `json:"commit_p50_ms"`
	CommitP99MS    float64 `json:"commit_p99_ms"`
	ReadCosts      []Read  `json:"reads,omitempty"`
	OpenS          float64 `json:"open_s,omitempty"`
	OpenCPUS       float64 `json:"open_cpu_s,omitempty"`
	OpenMsgPerS    float64 `json:"open_msg_per_s,omitempty"`
	HeapPerMsg     float64 `json:"heap_bytes_per_msg,omitempty"`  // Go heap of the open engine
	IndexPerMsg    float64 `json:"index_bytes_per_msg,omitempty"` // seglog: its position and room indexes
	MessagesStored int     `json:"messages_stored,omitempty"`
}

// Read is the cost of one kind of read.
type Read struct {
	Name     string  `json:"name"`
	N        int     `json:"n"`
	CPUUS    float64 `json:"cpu_us"`
	WallUS   float64 `json:"wall_us"`
	Messages int     `json:"messages"` // per read
}

func main() {
	var (
		child   = flag.Bool("child", false, "run one engine on one workload and print its Result (used by the parent)")
		engine  = flag.String("engine", "", "with -child: the engine")
		work    = flag.String("workload", "", "with -child: the workload (or \"reads\")")
		n       = flag.Int("n", 200_000, "messages per write workload")
		runs    = flag.Int("runs", 2, "times to run the whole table")
		only    = flag.String("engines", "", "comma-separated engines (default all)")
		onlyW   = flag.String("workloads", "", "comma-separated workloads (default all, and reads)")
		base    = flag.String("dir", os.TempDir(), "where the data directories are made (and removed): the disk to measure")
		out     = flag.String("json", "", "write the results here as they come")
		table   = flag.String("table", "", "print the markdown tables of this JSON file and exit")
		readsN  = flag.Int("reads", 2000, "reads of each kind")
		roomMsg = flag.Int("room-messages", 10_000, "messages per room for the reads")
	)
	flag.Parse()
	if *table != "" {
		if err := printTables(*table); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if *child {
		var r Result
		var err error
		if *work == "reads" {
			r, err = runReads(*engine, *base, *roomMsg, *readsN)
		} else {
			r, err = runWrites(*engine, *work, *base, *n)
		}
		if err != nil {
			r.Err = err.Error()
		}
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	names := pick(*only, func() []string {
		var s []string
		for _, e := range engines {
			s = append(s, e.name)
		}
		return s
	}())
	works := pick(*onlyW, func() []string {
		var s []string
		for _, w := range workloads {
			s = append(s, w.name)
		}
		return append(s, "reads")
	}())
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var all []Result
	for run := 1; run <= *runs; run++ {
		for _, e := range names {
			for _, w := range works {
				cmd := exec.Command(self, "-child", "-engine", e, "-workload", w, "-dir", *base,
					"-n", fmt.Sprint(*n), "-reads", fmt.Sprint(*readsN), "-room-messages", fmt.Sprint(*roomMsg))
				cmd.Stderr = os.Stderr
				b, err := cmd.Output()
				var r Result
				if err != nil {
					r = Result{Engine: e, Workload: w, Err: fmt.Sprintf("child: %v", err)}
				} else if err := json.Unmarshal(b, &r); err != nil {
					r = Result{Engine: e, Workload: w, Err: fmt.Sprintf("child output: %v", err)}
				}
				r.Run = run
				all = append(all, r)
				fmt.Fprintf(os.Stderr, "run %d %-13s %-10s %s\n", run, e, w, summary(r))
				if *out != "" {
					b, _ := json.MarshalIndent(all, "", "  ")
					if err := os.WriteFile(*out, b, 0o644); err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(1)
					}
				}
			}
		}
	}
}

func pick(list string, all []string) []string {
	if list == "" {
		return all
	}
	return strings.Split(list, ",")
}

func summary(r Result) string {
	if r.Err != "" {
		return "FAILED: " + r.Err
	}
	if r.Workload == "reads" {
		var s []string
		for _, rd := range r.ReadCosts {
			s = append(s, fmt.Sprintf("%s %.1f µs cpu", rd.Name, rd.CPUUS))
		}
		return fmt.Sprintf("open %.2f s; %s", r.OpenS, strings.Join(s, ", "))
	}
	return fmt.Sprintf("%d msgs %.1f µs cpu/msg %.0f B/msg %.0f msg/s", r.Messages, r.CPUPerMsgUS, r.WritePerMsg, r.MsgPerS)
}

// runWrites commits the workload's batches into a fresh engine, measuring
// from the first commit to the return of the last.
func runWrites(engine, work, base string, n int) (Result, error) {
	r := Result{Engine: engine, Workload: work}
	spec, err := findEngine(engine)
	if err != nil {
		return r, err
	}
	w, err := findWorkload(work)
	if err != nil {
		return r, err
	}
	dir, err := os.MkdirTemp(base, "bakeoff-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	batches := w.batches(newGen(benchRooms, 1), n)
	e, err := spec.open(dir)
	if err != nil {
		return r, fmt.Errorf("open: %w", err)
	}
	dev := deviceOf(dir)
	runtime.GC()
	lat := make([]time.Duration, 0, len(batches))
	before := take(dev)
	deadline := before.wall.Add(w.cap)
	for _, b := range batches {
		t := time.Now()
		if err := e.Commit(b); err != nil {
			e.Close()
			return r, fmt.Errorf("commit: %w", err)
		}
		lat = append(lat, time.Since(t))
		r.Messages += len(b)
		r.Commits++
		if time.Now().After(deadline) {
			r.Capped = r.Commits < len(batches)
			break
		}
	}
	after := take(dev)
	r.FilesBytes = dirSize(dir)
	if err := e.Close(); err != nil {
		return r, fmt.Errorf("close: %w", err)
	}
	m := float64(r.Messages)
	r.WallS = after.wall.Sub(before.wall).Seconds()
	r.UserPerMsgUS = float64((after.user - before.user).Microseconds()) / m
	r.SysPerMsgUS = float64((after.sys - before.sys).Microseconds()) / m
	r.CPUPerMsgUS = r.UserPerMsgUS + r.SysPerMsgUS
	r.WritePerMsg = float64(after.writeBytes-before.writeBytes) / m
	r.DevicePerMsg = float64(after.deviceBytes-before.deviceBytes) / m
	r.MsgPerS = m / r.WallS
	slices.Sort(lat)
	r.CommitP50MS = float64(lat[len(lat)/2].Microseconds()) / 1000
	r.CommitP99MS = float64(lat[len(lat)*99/100].Microseconds()) / 1000
	return r, nil
}

// runReads fills rooms of roomMsg messages from three origins (commits of
// 512), reopens the engine (measuring the open: the rebuild, for seglog),
// then times each kind of read chatr makes.
func runReads(engine, base string, roomMsg, reads int) (Result, error) {
	r := Result{Engine: engine, Workload: "reads"}
	spec, err := findEngine(engine)
	if err != nil {
		return r, err
	}
	dir, err := os.MkdirTemp(base, "bakeoff-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	const rooms = 20
	batches := mixBatches(171)(newGen(rooms, 2), rooms*roomMsg)
	e, err := spec.open(dir)
	if err != nil {
		return r, fmt.Errorf("open: %w", err)
	}
	for _, b := range batches {
		if err := e.Commit(b); err != nil {
			e.Close()
			return r, fmt.Errorf("commit: %w", err)
		}
		r.MessagesStored += len(b)
	}
	if err := e.Close(); err != nil {
		return r, err
	}
	want := roomOrder(batches)
	var names []string
	for room := range want {
		names = append(names, room)
	}
	slices.Sort(names)
	vec := map[string]uint64{}
	for _, b := range batches {
		for _, m := range b {
			vec[m.Origin] = max(vec[m.Origin], m.Seq)
		}
	}
	batches = nil
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap0 := ms.HeapAlloc

	u0, s0 := cpuNow()
	t0 := time.Now()
	if e, err = spec.open(dir); err != nil {
		return r, fmt.Errorf("reopen: %w", err)
	}
	defer e.Close()
	r.OpenS = time.Since(t0).Seconds()
	u1, s1 := cpuNow()
	r.OpenCPUS = (u1 - u0 + s1 - s0).Seconds()
	r.OpenMsgPerS = float64(r.MessagesStored) / r.OpenS
	runtime.GC()
	runtime.ReadMemStats(&ms)
	r.HeapPerMsg = (float64(ms.HeapAlloc) - float64(heap0)) / float64(r.MessagesStored)
	if sl, ok := e.(*seglog); ok {
		r.IndexPerMsg = float64(sl.indexBytes()) / float64(r.MessagesStored)
	}

	rng := rand.New(rand.NewPCG(3, 3))
	cursors := map[string]map[string]uint64{}
	for _, room := range names {
		cursors[room] = cursorBefore(want[room], 100)
	}
	kinds := []struct {
		name string
		n    int
		do   func() (int, error)
	}{
		{"latest50", reads, func() (int, error) {
			room := names[rng.IntN(len(names))]
			got, err := e.Latest(room, 50)
			if err == nil && (len(got) != 50 || got[49] != want[room][len(want[room])-1]) {
				err = fmt.Errorf("latest of %s: got %d messages, not the newest 50", room, len(got))
			}
			return len(got), err
		}},
		{"since100", reads, func() (int, error) {
			room := names[rng.IntN(len(names))]
			got, err := e.Since(room, cursors[room], 1000)
			if err == nil && (len(got) != 100 || got[0] != want[room][len(want[room])-100]) {
				err = fmt.Errorf("since in %s: got %d messages, not the last 100", room, len(got))
			}
			return len(got), err
		}},
		{"range512", reads / 4, func() (int, error) {
			o := origins[rng.IntN(len(origins))]
			from := 1 + rng.Uint64N(vec[o]-512)
			got, err := e.Range(o, from, 512)
			if err == nil && (len(got) != 512 || got[0].Seq != from || got[511].Seq != from+511) {
				err = fmt.Errorf("range of %s from %d: got %d messages", o, from, len(got))
			}
			return len(got), err
		}},
	}
	for _, k := range kinds {
		for range k.n / 10 { // warm up
			if _, err := k.do(); err != nil {
				return r, err
			}
		}
		runtime.GC()
		u0, s0 := cpuNow()
		t0 := time.Now()
		total := 0
		for range k.n {
			got, err := k.do()
			if err != nil {
				return r, err
			}
			total += got
		}
		wall := time.Since(t0)
		u1, s1 := cpuNow()
		r.ReadCosts = append(r.ReadCosts, Read{Name: k.name, N: k.n,
			CPUUS:    float64((u1 - u0 + s1 - s0).Microseconds()) / float64(k.n),
			WallUS:   float64(wall.Microseconds()) / float64(k.n),
			Messages: total / k.n})
	}
	return r, nil
}

var errNoResults = errors.New("no results")
