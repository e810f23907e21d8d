package proctest

import (
	"os/exec"
	"strings"
	"testing"
)

// UsageError is a command line that chatr must refuse as a usage error.
type UsageError struct {
	Args []string // after the binary's name and the common prefix
	Want string   // what the message must mention
}

// CheckUsageErrors runs `bin prefix... Args...` for each case and fails the
// test for each one that does not exit with code 2 and print Want.
func CheckUsageErrors(t testing.TB, bin string, prefix []string, cases []UsageError) {
	t.Helper()
	for _, c := range cases {
		args := append(append([]string{}, prefix...), c.Args...)
		cmd := exec.Command(bin, args...)
		out, err := cmd.CombinedOutput()
		code := -1
		if cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
		if err == nil || code != 2 || !strings.Contains(string(out), c.Want) {
			t.Errorf("chatr %s: exit %d (%v), output %q; want exit 2 and %q", strings.Join(args, " "), code, err, out, c.Want)
		}
	}
}
