package store

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"chatr/internal/proto"
)

// BenchmarkAppend measures the append path as a busy node sees it: many
// senders at once, so the writer commits them in groups and one fsync pays
// for many messages.
func BenchmarkAppend(b *testing.B) {
	s := openStore(b, b.TempDir())
	b.SetParallelism(64) // 64 senders per GOMAXPROCS
	b.ReportAllocs()
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := s.Append(ctx, "lobby", "bench", "a message of an ordinary length, say sixty bytes"); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkAppendWithRef is BenchmarkAppend with a ref on every message, as
// WebSocket clients send: each append also looks for an earlier copy.
func BenchmarkAppendWithRef(b *testing.B) {
	s := openStore(b, b.TempDir())
	b.SetParallelism(64)
	b.ReportAllocs()
	var n atomic.Int64
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			draft := proto.Message{Room: "lobby", Sender: "bench", Text: "a message of an ordinary length, say sixty bytes",
				Ref: strconv.FormatInt(n.Add(1), 10)}
			done := make(chan error, 1)
			if err := s.AppendAsync(ctx, draft, func(_ proto.Message, err error) { done <- err }); err != nil {
				b.Error(err)
				return
			}
			if err := <-done; err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkAppendSerial is one sender waiting for each ack: one commit, one
// fsync per message, the worst case of group commit.
func BenchmarkAppendSerial(b *testing.B) {
	s := openStore(b, b.TempDir())
	ctx := context.Background()
	b.ReportAllocs()
	start := time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Append(ctx, "lobby", "bench", "a message of an ordinary length, say sixty bytes"); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkInsertBatch stores replicated messages in batches of 512, as a
// follower does under load: the CPU cost of a stored message, fsync shared.
func BenchmarkInsertBatch(b *testing.B) {
	s := openStore(b, b.TempDir())
	ctx := context.Background()
	const batch = 512
	msgs := make([]proto.Message, batch)
	b.ReportAllocs()
	start := time.Now()
	b.ResetTimer()
	seq := uint64(0)
	for i := 0; i < b.N; i += batch {
		for j := range msgs {
			seq++
			msgs[j] = proto.Message{Origin: "0123456789ab", Seq: seq, Room: fmt.Sprintf("room%d", seq%30),
				Sender: "bench", Text: "a message of an ordinary length, say sixty bytes",
				Created: time.Now().UnixMicro(), Ref: fmt.Sprint(seq)}
		}
		if _, err := s.Insert(ctx, msgs); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkSinceReplay reads what a client resuming with `since` is sent: a
// room's 10,000 messages after an old cursor, across three origins.
func BenchmarkSinceReplay(b *testing.B) {
	s := openStore(b, b.TempDir())
	ctx := context.Background()
	origins := []string{"0123456789ab", "abcdef012345", "fedcba987654"}
	var msgs []proto.Message
	for i := 0; i < 10000; i++ {
		o := i % 3
		msgs = append(msgs, proto.Message{Origin: origins[o], Seq: uint64(i/3 + 1), Room: "lobby",
			Sender: "bench", Text: "a message of an ordinary length, say sixty bytes", Created: int64(1_000_000 + i)})
	}
	if _, err := s.Insert(ctx, msgs); err != nil {
		b.Fatal(err)
	}
	cursor := proto.Vector{origins[0]: 1, origins[1]: 1, origins[2]: 1}
	b.ReportAllocs()
	start := time.Now()
	b.ResetTimer()
	n := 0
	for i := 0; i < b.N; i++ {
		p, err := s.Since(ctx, "lobby", cursor, 10000, true)
		if err != nil {
			b.Fatal(err)
		}
		n += len(p.Messages)
	}
	b.StopTimer()
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkSinceCaughtUp is the fixed cost of a resume that replays
// nothing (the cursor covers the room): the room's heads and the look for
// hidden copies the cursor covers, which every join with since pays.
func BenchmarkSinceCaughtUp(b *testing.B) {
	s := openStore(b, b.TempDir())
	ctx := context.Background()
	var msgs []proto.Message
	for i := 0; i < 1000; i++ {
		msgs = append(msgs, proto.Message{Origin: "0123456789ab", Seq: uint64(i + 1), Room: "lobby",
			Sender: "bench", Text: "a message of an ordinary length, say sixty bytes", Created: int64(1_000_000 + i)})
	}
	if _, err := s.Insert(ctx, msgs); err != nil {
		b.Fatal(err)
	}
	cursor := s.Vector()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if p, err := s.Since(ctx, "lobby", cursor, 10000, true); err != nil || len(p.Messages) != 0 {
			b.Fatal(len(p.Messages), err)
		}
	}
}
