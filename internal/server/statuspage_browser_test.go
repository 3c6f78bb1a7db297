package server_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/internal/testcluster"
)

// findChromium returns the path of a headless-capable Chromium, or "".
func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser starts a headless Chromium for the test, or skips the test when
// none is installed (.ci/run installs Debian's chromium package).
func browser(t *testing.T) context.Context {
	t.Helper()
	path := findChromium()
	if path == "" {
		t.Skip("no chromium on PATH: install Debian's chromium package (apt-get install chromium) to run the status page's browser test; .ci/run does")
	}
	// Chromium itself sometimes dies while it starts on a loaded machine
	// ("chrome failed to start", seen once in the suite run five times in a
	// row under load): that says nothing about the status page, so the
	// launch is tried a few times, each with a fresh profile, before the
	// test gives up.
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
			chromedp.Flag("disable-dev-shm-usage", true), chromedp.UserDataDir(t.TempDir()))
		actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancelC := chromedp.NewContext(actx)
		ctx, cancelT := context.WithTimeout(ctx, 5*hangGuard)
		if err = chromedp.Do(ctx); err == nil {
			t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
			return ctx
		}
		cancelT()
		cancelC()
		cancelA()
		t.Logf("start chromium at %s, attempt %d of 3: %v", path, attempt, err)
	}
	t.Fatalf("start chromium at %s: failed 3 times, the last: %v", path, err)
	return nil
}

// waitText waits until the element's text satisfies ok (the page refreshes
// itself every second) and returns it.
func waitText(t *testing.T, ctx context.Context, id string, what string, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	var text string
	for {
		var err error
		text, err = chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.getElementById(%q).innerText`, id)))
		if err == nil && ok(text) {
			return text
		}
		if time.Now().After(deadline) {
			t.Fatalf("#%s never showed %s (err %v); it shows:\n%s", id, what, err, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// search replaces the text of a search box: clears it, then types text
// key by key as a user would.
func search(t *testing.T, ctx context.Context, id, text string) {
	t.Helper()
	clear := fmt.Sprintf(`(() => { const e = document.getElementById(%q); e.value = ""; e.dispatchEvent(new Event("input")); return true; })()`, id)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](clear)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#"+id), text)); err != nil {
		t.Fatal(err)
	}
}

func contains(subs ...string) func(string) bool {
	return func(s string) bool {
		for _, sub := range subs {
			if !strings.Contains(s, sub) {
				return false
			}
		}
		return true
	}
}

// TestStatusPageInBrowser takes locks through the client library, then
// finds them on the status page in a real headless browser: the holders
// with session, owner and token, a waiter, the search box, paging, the
// sessions, members and group masters.
func TestStatusPageInBrowser(t *testing.T) {
	ctx := browser(t)
	c := testcluster.Start(t, testcluster.Options{Groups: 3})
	c.WaitForMasters(hangGuard)

	cctx, cancel := context.WithTimeout(context.Background(), 5*hangGuard)
	defer cancel()
	cl, err := client.New(cctx, client.Config{Endpoints: c.Endpoints(), TLS: c.ClientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	s1, err := cl.NewSession(cctx, client.SessionOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	orders, err := s1.Acquire(cctx, "orders/42", client.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := s1.Acquire(cctx, "inventory/7", client.LockOptions{Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 55 {
		if _, err := s1.Acquire(cctx, fmt.Sprintf("bulk/%02d", i), client.LockOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A second session waits for orders/42.
	s2, err := cl.NewSession(cctx, client.SessionOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitCtx, stopWait := context.WithCancel(cctx)
	defer stopWait()
	waiting := make(chan struct{})
	go func() {
		defer close(waiting)
		_, _ = s2.Acquire(waitCtx, "orders/42", client.LockOptions{})
	}()

	srv := httptest.NewServer(c.Server(0).AdminHandler())
	defer srv.Close()
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatal(err)
	}

	// Members and group masters.
	waitText(t, ctx, "members", "three members, this one and two up", contains("self", "up"))
	groups := waitText(t, ctx, "groups", "every group with a master", func(s string) bool { return !strings.Contains(s, "none") && strings.Count(s, "\n") >= 2 })
	t.Logf("groups on the page:\n%s", groups)

	// The first page of locks: sorted by name, 50 of 57.
	waitText(t, ctx, "lock-page", "1-50 of 57", contains("1-50 of 57"))
	// Search: orders/42 with its holder and its waiter.
	search(t, ctx, "lock-q", "orders/")
	holder := fmt.Sprintf("session %d (", orders.SessionID())
	token := fmt.Sprintf("token %d", orders.Token())
	locks := waitText(t, ctx, "locks", "orders/42 held by its session with its token and one waiter",
		func(s string) bool {
			return contains("orders/42", "exclusive", holder, token, "1: ")(s) && !strings.Contains(s, "bulk/") && !strings.Contains(s, "inventory/")
		})
	t.Logf("locks matching orders/:\n%s", locks)
	waitText(t, ctx, "lock-page", "1-1 of 1", contains("1-1 of 1"))

	// Another search: the shared lock.
	search(t, ctx, "lock-q", "inventory")
	waitText(t, ctx, "locks", "inventory/7, shared", func(s string) bool {
		return contains("inventory/7", "shared", fmt.Sprintf("token %d", inv.Token()))(s) && !strings.Contains(s, "orders/42")
	})

	// Paging through the bulk locks.
	search(t, ctx, "lock-q", "bulk/")
	waitText(t, ctx, "lock-page", "1-50 of 55", contains("1-50 of 55"))
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#lock-next"))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, "lock-page", "51-55 of 55", contains("51-55 of 55"))
	waitText(t, ctx, "locks", "bulk/54 on the second page", func(s string) bool { return strings.Contains(s, "bulk/54") && !strings.Contains(s, "bulk/00") })

	// Sessions: the holder's session, with its locks.
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#session-q"), fmt.Sprint(orders.SessionID()))); err != nil {
		t.Fatal(err)
	}
	sess := waitText(t, ctx, "sessions", "the holding session with its locks", contains(fmt.Sprint(orders.SessionID()), "orders/42", "10s"))
	t.Logf("sessions matching %d:\n%s", orders.SessionID(), sess)

	stopWait()
	<-waiting
}
