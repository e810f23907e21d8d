package clustertest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDebugSlow(t *testing.T) {
	t.Parallel()
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			c := Start(t, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := range 20 {
						s := time.Now()
						c.MustPost(i, "lobby", "u", fmt.Sprint(k))
						if d := time.Since(s); d > 200*time.Millisecond {
							t.Logf("%s node %d send %d took %v", s.Format("15:04:05.000"), i, k, d)
						}
					}
				}()
			}
			wg.Wait()
			_, b, _ := HTTPFetch(c.api)(t.Context(), "GET", "http://"+c.HTTPAddr(0)+"/metrics", nil)
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "store") && !strings.HasPrefix(l, "#") {
					t.Log(l)
				}
			}
		})
	}
}
