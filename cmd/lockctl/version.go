package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/internal/buildinfo"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3"); without
// it the module version from the build info is used.
var version = ""

// versionString is the module version, the VCS revision the binary was
// built from (with "+dirty" for uncommitted changes) and its time, and the
// Go toolchain.
func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "" {
		v = bi.Main.Version
	}
	if v == "" {
		v = "(devel)"
	}
	if rev := buildinfo.Revision(); rev != "" {
		v += " " + rev
	}
	return fmt.Sprintf("%s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print lockctl's version and the revision it was built from",
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usageErrorf("version takes no arguments, got %q", c.Args().First())
			}
			fmt.Fprintf(c.App.Writer, "lockctl %s\n", versionString())
			return nil
		},
	}
}

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash or zsh)",
		ArgsUsage: "bash | zsh",
		Description: `Load it in your shell's start-up file:
   bash:  source <(lockctl completion bash)
   zsh:   source <(lockctl completion zsh)
It completes lockctl's commands and flags.`,
		Action: func(c *cli.Context) error {
			script, ok := map[string]string{"bash": bashCompletion, "zsh": zshCompletion}[c.Args().First()]
			if c.NArg() != 1 || !ok {
				return usageErrorf("want a shell: lockctl completion bash | zsh")
			}
			fmt.Fprint(c.App.Writer, script)
			return nil
		},
	}
}

// The scripts ask lockctl itself (--generate-bash-completion, which cli
// answers) for the words that fit.
const bashCompletion = `# bash completion for lockctl: source <(lockctl completion bash)
_lockctl_complete() {
    local cur words
    cur="${COMP_WORDS[COMP_CWORD]}"
    if [[ "$cur" == -* ]]; then
        words=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
    else
        words=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
    fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    return 0
}
complete -o bashdefault -o default -F _lockctl_complete lockctl
`

const zshCompletion = `#compdef lockctl
# zsh completion for lockctl: source <(lockctl completion zsh)
_lockctl() {
    local -a opts
    local cur="${words[-1]}"
    if [[ "$cur" == -* ]]; then
        opts=("${(@f)$(${words[@]:0:#words[@]-1} "$cur" --generate-bash-completion 2>/dev/null)}")
    else
        opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
    fi
    if [[ -n "${opts[1]}" ]]; then
        _describe 'values' opts
    else
        _files
    fi
}
if [[ "$funcstack[1]" == "_lockctl" ]]; then
    _lockctl "$@"
else
    compdef _lockctl lockctl
fi
`
