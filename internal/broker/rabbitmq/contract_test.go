package rabbitmq_test

import (
	"testing"

	"github.com/ms2m/ms2m/internal/broker/brokertest"
)

func TestContract(t *testing.T) { brokertest.Run(t, env(t)) }
