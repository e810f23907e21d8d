//go:build chatrstub

package main

import "io"

func chatMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int { return 2 }
func benchMain(args []string, stdout, stderr io.Writer) int                  { return 2 }
