package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"chatr/internal/proctest"
	"chatr/internal/proto"
)

// faultKind is one kind of fault of the schedule.
type faultKind int

const (
	faultKill    faultKind = iota // kill -9, restarted a few seconds later
	faultPause                    // SIGSTOP, SIGCONT 1-6 s later
	faultTerm                     // SIGTERM, restarted a few seconds later
	faultRestart                  // SIGTERM, restarted at once
	faultIsolate                  // one node's link down at the bridge: clients lose it too
	faultSplit                    // a minority of the nodes cut from the rest; clients reach both sides
	faultPartial                  // only the link between two nodes cut; both reach every other node
	faultKinds
)

func (k faultKind) String() string {
	return [...]string{"kill -9", "SIGSTOP", "SIGTERM", "restart", "isolate", "split", "partial partition"}[k]
}

// How long faults last and the cluster stays healthy between them. Each
// fault is undone before the next; with the wait for the cluster to
// re-form, the cluster is healthy about half of the time or more.
const (
	healthyMin, healthyMax = 2 * time.Second, 4 * time.Second
	downMin, downMax       = 2 * time.Second, 6 * time.Second // kill -9, SIGTERM
	pauseMin, pauseMax     = 1 * time.Second, 6 * time.Second
	cutMin, cutMax         = 3 * time.Second, 8 * time.Second // isolate, split
	// A partial partition lasts long enough for the check: what the third
	// node holds partialLook in must reach both cut-off nodes within the
	// next 5.5 s or more.
	partialMin, partialMax = 9 * time.Second, 12 * time.Second
	// partialLook is how far into a partial partition the third node's
	// holdings are read: what both cut-off nodes should hold by the end.
	partialLook = 3 * time.Second
	// termLook bounds the wait, after a node exited on SIGTERM, for the
	// nodes still running to hold every message it acked in the last
	// termSpan (older ones have had every chance to be copied; reading
	// only the recent part keeps the check light on a long run).
	termLook = 8 * time.Second
	termSpan = time.Minute
	// faultRoom is the least time left in the phase for one more fault.
	faultRoom = 10 * time.Second
)

// Names of the checks made during the run.
const (
	checkReforms = "cluster-reforms-after-each-fault"
	checkTerm    = "sigterm-keeps-acks"
	checkPartial = "partial-partition-routed"
)

// schedule draws faults from one seeded stream and applies them one at a
// time on the test goroutine. The first faults are a shuffle of every
// kind, so a short run meets each kind once; then the bag is refilled.
type schedule struct {
	cl    *cluster
	crowd *crowd
	rng   *rand.Rand
	bag   []faultKind

	faults   []string            // what happened, for the log
	findings map[string][]string // check -> what it found wrong
	checked  map[string]int      // check -> times it ran
}

func newSchedule(cl *cluster, crowd *crowd, seed uint64) *schedule {
	return &schedule{cl: cl, crowd: crowd, rng: rand.New(rand.NewPCG(seed, 0)),
		findings: map[string][]string{}, checked: map[string]int{}}
}

// between draws a duration from lo to hi, in tenths of a second.
func (s *schedule) between(lo, hi time.Duration) time.Duration {
	const step = 100 * time.Millisecond
	return lo + step*time.Duration(s.rng.Int64N(int64((hi-lo)/step)+1))
}

func (s *schedule) draw() faultKind {
	if len(s.bag) == 0 {
		for k := range faultKinds {
			s.bag = append(s.bag, k)
		}
		s.rng.Shuffle(len(s.bag), func(i, j int) { s.bag[i], s.bag[j] = s.bag[j], s.bag[i] })
	}
	k := s.bag[0]
	s.bag = s.bag[1:]
	return k
}

func (s *schedule) find(check, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.findings[check] = append(s.findings[check], msg)
	s.cl.logf("FOUND (%s): %s", check, msg)
}

// run applies faults until the phase ends at until, each after a healthy
// spell and once every node is back in the cluster.
func (s *schedule) run(until time.Time) {
	for {
		time.Sleep(s.between(healthyMin, healthyMax)) // a healthy spell is part of the schedule
		s.checked[checkReforms]++
		if err := s.cl.waitMembers(convergeTimeout); err != nil {
			s.find(checkReforms, "after %s the cluster did not re-form within %v: %v", s.last(), convergeTimeout, err)
		}
		if time.Until(until) < faultRoom {
			return
		}
		s.apply(s.draw())
	}
}

func (s *schedule) last() string {
	if len(s.faults) == 0 {
		return "the start"
	}
	return s.faults[len(s.faults)-1]
}

// apply does one fault and undoes it.
func (s *schedule) apply(k faultKind) {
	cl := s.cl
	nodes := cl.nodes
	n := nodes[s.rng.IntN(len(nodes))]
	var did string
	switch k {
	case faultKill:
		d := s.between(downMin, downMax)
		cl.logf("kill -9 %s, down for %v", n.name, d)
		cl.kill(n)
		time.Sleep(d)
		cl.restart(n)
		did = fmt.Sprintf("kill -9 %s (down %v)", n.name, d)
	case faultPause:
		d := s.between(pauseMin, pauseMax)
		cl.logf("SIGSTOP %s for %v", n.name, d)
		cl.pause(n)
		time.Sleep(d)
		cl.resume(n)
		did = fmt.Sprintf("SIGSTOP %s (%v)", n.name, d)
	case faultTerm, faultRestart:
		d := time.Duration(0) // restart: at once, once it has exited
		if k == faultTerm {
			d = s.between(downMin, downMax)
		}
		cl.logf("SIGTERM %s, restarted %v after", n.name, d)
		stopped := time.Now()
		cl.term(n)
		s.checkTermAcks(n)
		time.Sleep(d - time.Since(stopped))
		cl.restart(n)
		did = fmt.Sprintf("SIGTERM %s (down %v)", n.name, time.Since(stopped).Round(100*time.Millisecond))
	case faultIsolate:
		d := s.between(cutMin, cutMax)
		cl.logf("isolate %s for %v", n.name, d)
		cl.lan.Cut(n.index)
		time.Sleep(d)
		cl.lan.Heal(n.index)
		did = fmt.Sprintf("isolate %s (%v)", n.name, d)
	case faultSplit:
		d := s.between(cutMin, cutMax)
		perm := s.rng.Perm(len(nodes))
		small := perm[:1+s.rng.IntN((len(nodes)-1)/2)]
		var minority, majority []*chaosNode
		for _, o := range nodes {
			if slices.Contains(small, o.index) {
				minority = append(minority, o)
			} else {
				majority = append(majority, o)
			}
		}
		cl.logf("split %v | %v for %v", names(majority), names(minority), d)
		for _, a := range minority {
			for _, b := range majority {
				cl.lan.CutPair(a.index, b.index)
			}
		}
		time.Sleep(d)
		for _, a := range minority {
			for _, b := range majority {
				cl.lan.HealPair(a.index, b.index)
			}
		}
		did = fmt.Sprintf("split %v | %v (%v)", names(majority), names(minority), d)
	case faultPartial:
		d := s.between(partialMin, partialMax)
		b := nodes[(n.index+1+s.rng.IntN(len(nodes)-1))%len(nodes)]
		cl.logf("partial partition: %s-%s cut for %v", n.name, b.name, d)
		cut := time.Now()
		cl.lan.CutPair(n.index, b.index)
		s.checkRouted(n, b, cut, d)
		time.Sleep(d - time.Since(cut))
		cl.lan.HealPair(n.index, b.index)
		did = fmt.Sprintf("partial partition %s-%s (%v)", n.name, b.name, d)
	}
	cl.logf("undone: %s", did)
	s.faults = append(s.faults, did)
}

func names(ns []*chaosNode) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.name)
	}
	return out
}

// checkTermAcks: node n has exited on SIGTERM, a clean stop, with every
// other node up. Every message it acked must be held by the others; a
// node that drains takes no send it cannot hand on.
func (s *schedule) checkTermAcks(n *chaosNode) {
	s.checked[checkTerm]++
	exited := time.Now()
	from := exited.Add(-termSpan)
	var missing []string
	_, err := proctest.Poll(termLook, func() error {
		missing = missing[:0]
		var mine []ackedSend
		for _, a := range s.crowd.acked() {
			origin, _, _ := proto.ParseMessageID(a.id)
			if (origin == n.id || a.by == n.index) && !a.created.Before(from) {
				mine = append(mine, a)
			}
		}
		for _, o := range s.cl.up() {
			hists, err := s.cl.recent(o.index, allRooms, from)
			if err != nil {
				return err
			}
			ids, texts := listed(hists)
			for _, a := range mine {
				if !ids[a.id] && !texts[a.text] {
					missing = append(missing, fmt.Sprintf("%s lacks %s (%q, acked by %s)", o.name, a.id, a.text, s.cl.nodes[a.by].name))
				}
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d acked messages missing", len(missing))
		}
		return nil
	})
	if err != nil && len(missing) > 0 {
		s.find(checkTerm, "%s exited on SIGTERM at %.1fs; %v later the nodes still running lack %d messages it acked: %s; "+
			"they come back only if %s restarts (it leaves the cluster, then still acks sends no peer follows)",
			n.name, exited.Sub(s.cl.start).Seconds(), termLook, len(missing), sample(missing, 4), n.name)
	} else if err != nil {
		s.find(checkTerm, "after %s exited on SIGTERM: %v", n.name, err)
	}
}

// checkRouted: with only the a-b link cut, both still reach every other
// node, which holds their messages; a and b should get each other's from
// there. What a third node holds partialLook into the cut, a and b must
// hold by its end.
func (s *schedule) checkRouted(a, b *chaosNode, cut time.Time, hold time.Duration) {
	var third *chaosNode
	for _, o := range s.cl.nodes {
		if o != a && o != b {
			third = o
			break
		}
	}
	time.Sleep(partialLook - time.Since(cut)) // the look is part of the schedule
	// Messages from before the cut reached both directly.
	from := cut.Add(-time.Second)
	hc, err := s.cl.recent(third.index, allRooms, from)
	if err != nil {
		s.cl.logf("partial partition check skipped: %v", err)
		return
	}
	s.checked[checkPartial]++
	want := map[*chaosNode][]string{} // node -> ids of the other's origin it must get
	for _, h := range hc {
		for _, m := range h {
			switch m.Node {
			case b.id:
				want[a] = append(want[a], m.ID)
			case a.id:
				want[b] = append(want[b], m.ID)
			}
		}
	}
	var lacks []string
	_, err = proctest.Poll(hold-time.Since(cut)-500*time.Millisecond, func() error {
		lacks = lacks[:0]
		for _, n := range []*chaosNode{a, b} {
			other := b
			if n == b {
				other = a
			}
			hists, err := s.cl.recent(n.index, allRooms, from)
			if err != nil {
				return err
			}
			ids, _ := listed(hists)
			var miss []string
			for _, id := range want[n] {
				if !ids[id] {
					miss = append(miss, id)
				}
			}
			if len(miss) > 0 {
				lacks = append(lacks, fmt.Sprintf("%s lacks %d of the %d messages of %s that %s held (e.g. %s)",
					n.name, len(miss), len(want[n]), other.name, third.name, sample(miss, 3)))
			}
		}
		if len(lacks) > 0 {
			return fmt.Errorf("%s", strings.Join(lacks, "; "))
		}
		return nil
	})
	if err != nil {
		s.find(checkPartial, "with only the %s-%s link cut (both reach %s), %.1fs into the cut: %v; the cluster does not route around one cut link",
			a.name, b.name, third.name, time.Since(cut).Seconds(), err)
	}
}

// listed is the ids and the texts a node lists over its rooms.
func listed(hists map[string][]proto.MessageJSON) (ids, texts map[string]bool) {
	ids, texts = map[string]bool{}, map[string]bool{}
	for _, h := range hists {
		for _, m := range h {
			ids[m.ID], texts[m.Text] = true, true
		}
	}
	return ids, texts
}

// sample is the first k of xs, and how many more.
func sample(xs []string, k int) string {
	if len(xs) <= k {
		return strings.Join(xs, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(xs[:k], ", "), len(xs)-k)
}
