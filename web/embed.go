// Package web holds the chatr web client: one HTML page, one script and one
// style sheet, with no build step.
package web

import "embed"

// FS holds chatr.html, chatr.js and chatr.css at its root. The gateway serves
// it under /chatr/, so the page is /chatr/chatr.html and the script opens the
// WebSocket at /chatr/ws on the same host.
//
//go:embed chatr.html chatr.js chatr.css
var FS embed.FS
