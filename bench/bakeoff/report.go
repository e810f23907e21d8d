package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// printTables prints the markdown tables of a results file: one matrix
// per metric (engine x workload, "run 1 / run 2"), then the reads.
func printTables(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var rs []Result
	if err := json.Unmarshal(b, &rs); err != nil {
		return err
	}
	if len(rs) == 0 {
		return errNoResults
	}
	var engs, works []string
	seen := map[string]bool{}
	byKey := map[string][]Result{}
	for _, r := range rs {
		if !seen["e"+r.Engine] {
			seen["e"+r.Engine] = true
			engs = append(engs, r.Engine)
		}
		if r.Workload != "reads" && !seen["w"+r.Workload] {
			seen["w"+r.Workload] = true
			works = append(works, r.Workload)
		}
		k := r.Engine + "|" + r.Workload
		byKey[k] = append(byKey[k], r)
	}
	cell := func(e, w string, f func(Result) string) string {
		var s []string
		for _, r := range byKey[e+"|"+w] {
			if r.Err != "" {
				s = append(s, "failed")
				continue
			}
			s = append(s, f(r))
		}
		if len(s) == 0 {
			return "-"
		}
		return strings.Join(s, " / ")
	}
	matrix := func(title string, f func(Result) string) {
		fmt.Printf("%s (run 1 / run 2):\n\n| engine | %s |\n|---|%s\n", title, strings.Join(works, " | "), strings.Repeat("---|", len(works)))
		for _, e := range engs {
			row := []string{e}
			for _, w := range works {
				row = append(row, cell(e, w, f))
			}
			fmt.Printf("| %s |\n", strings.Join(row, " | "))
		}
		fmt.Println()
	}
	matrix("µs of CPU per message (user + sys)", func(r Result) string {
		s := fmt.Sprintf("%.1f", r.CPUPerMsgUS)
		if r.Capped {
			s += "*"
		}
		return s
	})
	matrix("bytes written per message (/proc/self/io write_bytes)", func(r Result) string { return fmt.Sprintf("%.0f", r.WritePerMsg) })
	matrix("bytes written per message on the whole device (/proc/diskstats, includes the ext4 journal and other processes)", func(r Result) string { return fmt.Sprintf("%.0f", r.DevicePerMsg) })
	matrix("messages per second (wall)", func(r Result) string { return fmt.Sprintf("%.0f", r.MsgPerS) })
	matrix("files' size after the run, bytes per message", func(r Result) string { return fmt.Sprintf("%.0f", float64(r.FilesBytes)/float64(r.Messages)) })
	matrix("commit p50 / p99, ms (run 1 only)", func(r Result) string {
		if r.Run != 1 {
			return ""
		}
		return fmt.Sprintf("%.2f, %.2f", r.CommitP50MS, r.CommitP99MS)
	})
	fmt.Printf("messages committed per run (* = stopped by the time cap):\n\n| engine | %s |\n|---|%s\n", strings.Join(works, " | "), strings.Repeat("---|", len(works)))
	for _, e := range engs {
		row := []string{e}
		for _, w := range works {
			row = append(row, cell(e, w, func(r Result) string {
				s := fmt.Sprint(r.Messages)
				if r.Capped {
					s += "*"
				}
				return s
			}))
		}
		fmt.Printf("| %s |\n", strings.Join(row, " | "))
	}
	fmt.Println()

	fmt.Println("reads, µs of CPU per read (wall µs in brackets), run 1 / run 2; open = reopen of the store with its messages:")
	fmt.Println()
	fmt.Println("| engine | Latest(room, 50) | Since: replay of the last 100 | Range(origin, from, 512) | open: s (msg/s) | Go heap after open, B/msg |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, e := range engs {
		rr := byKey[e+"|reads"]
		if len(rr) == 0 {
			continue
		}
		row := []string{e}
		for i := range 3 {
			var s []string
			for _, r := range rr {
				if r.Err != "" || i >= len(r.ReadCosts) {
					s = append(s, "failed")
					continue
				}
				c := r.ReadCosts[i]
				s = append(s, fmt.Sprintf("%.0f (%.0f)", c.CPUUS, c.WallUS))
			}
			row = append(row, strings.Join(s, " / "))
		}
		var o, h []string
		for _, r := range rr {
			if r.Err != "" {
				o, h = append(o, "failed"), append(h, "failed")
				continue
			}
			o = append(o, fmt.Sprintf("%.3f (%.0fk)", r.OpenS, r.OpenMsgPerS/1000))
			if r.IndexPerMsg > 0 {
				h = append(h, fmt.Sprintf("%.0f (index %.0f)", r.HeapPerMsg, r.IndexPerMsg))
			} else {
				h = append(h, fmt.Sprintf("%.0f", r.HeapPerMsg))
			}
		}
		row = append(row, strings.Join(o, " / "), strings.Join(h, " / "))
		fmt.Printf("| %s |\n", strings.Join(row, " | "))
	}
	for _, r := range rs {
		if r.Err != "" {
			fmt.Printf("\nrun %d %s %s failed: %s\n", r.Run, r.Engine, r.Workload, r.Err)
		}
	}
	return nil
}
