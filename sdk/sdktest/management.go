package sdktest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// KillConnection closes, from the broker's side, the connection whose
// client-given name is connName: what a broker restart or a network cut does
// to a client.
func (b *Broker) KillConnection(t testing.TB, connName string) {
	t.Helper()
	for _, n := range b.WaitConnection(t, connName) {
		if err := b.mgmt(http.MethodDelete, "/api/connections/"+url.PathEscape(n), nil); err != nil {
			t.Fatal(err)
		}
	}
}

// WaitConnection waits up to 10 s for a connection named connName to show
// up in the management API (which lists new connections with a delay) and
// returns the broker's names for it.
func (b *Broker) WaitConnection(t testing.TB, connName string) []string {
	t.Helper()
	if b.ManagementURL == "" {
		t.Fatal("the management API URL is not set")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		names, err := b.connectionsNamed(connName)
		if err != nil {
			t.Fatal(err)
		}
		if len(names) > 0 {
			return names
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection named %q in the management API", connName)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// connectionsNamed lists the broker's names of connections whose client
// called itself connName.
func (b *Broker) connectionsNamed(connName string) ([]string, error) {
	var conns []struct {
		Name             string `json:"name"`
		UserProvidedName string `json:"user_provided_name"`
	}
	if err := b.mgmt(http.MethodGet, "/api/connections?columns=name,user_provided_name", &conns); err != nil {
		return nil, err
	}
	var names []string
	for _, c := range conns {
		if c.UserProvidedName == connName {
			names = append(names, c.Name)
		}
	}
	return names, nil
}

func (b *Broker) mgmt(method, path string, out any) error {
	u, err := url.Parse(b.ManagementURL + path)
	if err != nil {
		return err
	}
	user, pass := "guest", "guest"
	if au, err := url.Parse(b.URL); err == nil && au.User != nil {
		user = au.User.Username()
		pass, _ = au.User.Password()
	}
	req, err := http.NewRequest(method, u.String(), nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(user, pass)
	req.Header.Set("X-Reason", "killed by a test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("management API %s %s: %w", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("management API %s %s: %s", method, path, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
